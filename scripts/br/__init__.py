"""The library under batch-requests' commands (scripts/*.py, which Make and users run).

A ground floor that knows no API and no prompt, and three rooms named for what the data
becomes, each importing only the floor and the rooms before it:

- the ground floor (this package's modules): ``cli`` (running a command: one line for a user's
  mistake), ``files`` (files that appear whole or not at all), ``journal`` (append-only
  journals: a live run's answers, each line fsynced as it arrives), ``records`` (JSON and
  JSONL, streamed), ``digests`` (sets kept on disk), ``config`` (the YAML config and its steps),
  ``layout`` (the build directory's names: the one reader and writer of chunks.mk and the rest),
  ``limits`` (the API's limits), ``prices`` (the price table), ``openai_api`` (OpenAI's
  endpoints, the keys and parameter ranges each accepts, context windows) and
  ``response_format`` (structured output: a step's schema and strict mode);
- ``prompts``: records -> requests (``build`` over ``templates`` and ``endpoints``, ``images/``,
  ``preflight``, ``tokens``, ``plan``);
- ``batches``: requests -> chunks -> paid batches, exactly once (``split``, ``chunk``,
  ``engine``, ``ended``, ``earlier``, ``submission``, ``ledger``, ``machine``, ``polling``,
  ``account``, ``tidy``), speaking to a provider through one seam (``provider``; ``openai``
  and its ``client`` are the first);
- ``answers``: results -> the merged dataset (``merge``, ``report``, ``gallery``);
- ``live``: requests answered through each provider's synchronous API instead of a batch
  (``modes``, ``wires``, ``call``, ``pace``, ``run``, ``sample``), into the same answers/;
- ``original``: what the original tool's command lines share.
"""
