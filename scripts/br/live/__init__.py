"""The live room: requests answered through the synchronous API instead of a batch.

``modes`` (batch, live or flex: which one a step runs in, what flex accepts, live prices),
``call`` (one request sent, 429s waited out, its answer as an answers/ row), ``run`` (a step's
chunks answered live: `make caption MODE=live`) and ``sample`` (`make sample`: a few records
answered and shown). Answers land in answers/ by request hash, one file each, so the merge,
report, gallery and a later batch run see them as they see a batch's.
"""
