"""The live room: requests answered through the synchronous API instead of a batch.

``modes`` (batch, live or flex: which one a step runs in, what flex accepts), ``wires`` (one
call through each provider's SDK: OpenAI, Anthropic's Messages, Gemini's generateContent, and
its answer as that provider's batch row), ``call`` (a request sent, 429s waited out, CONCURRENCY
at once), ``pace`` (the token budget as tokens per minute), ``run`` (a step's chunks answered
live: `make caption MODE=live`) and ``sample`` (`make sample`: a few records answered and
shown). Answers are appended to one journal per run in answers/ (br/journal.py), so the merge,
report, gallery and a later batch run see them as they see a batch's.
"""
