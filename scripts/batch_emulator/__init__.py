"""A local emulator of the OpenAI Files and Batches API (plus the model endpoints a batch may
call), served by ``scripts/emulator.py``. The facts it follows are in docs/api-facts.md.

The rooms, as moto keeps them (see docs/api-facts.md for each fact's source):

- the model, no HTTP: ``store`` (records on disk), ``lifecycle`` (a batch's life),
  ``validation`` (create-batch bodies, input files), ``outputs`` (output and error lines),
  ``answers`` with ``chat``, ``responses_api``, ``embeddings``, ``images``,
  ``schema_values`` (what each request gets), ``faults`` (faults and server variances),
  ``upstream`` (forwarding to a real server), ``seed`` (account history);
- the wire: ``exceptions`` (each API error and its envelope), ``wire`` (bodies, keys, the
  per-call steps), ``routes`` and ``admin`` (the route tables), ``uploads`` (multipart),
  ``server`` (uvicorn, timeouts, signals), ``options`` (the command line), ``facts``
  (the API's limits).

Anthropic's Message Batches and Gemini's Batch API share the port (docs/api-facts-anthropic.md,
docs/api-facts-gemini.md), a module per provider and room: the model ``anthropic_batches``,
``anthropic_messages``, ``gemini_batches``, ``gemini_files``, ``gemini_content``, over
``provider_store`` and ``provider_errors``; the wire ``anthropic_routes``, ``gemini_routes``
over ``provider_wire``.
"""
