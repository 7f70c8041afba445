"""Records -> requests: each selected record of the dataset becomes one request line.

- ``build``: the request builder (records in, ``Built`` requests out, with the dataset's checks),
  over ``templates`` (prompts filled, the data key) and ``endpoints`` (each endpoint's body);
- ``images/``: local images (``formats``, ``identity`` with ``request_hash``, ``cache``), and
  ``request_images``: a step's images for the commands;
- ``preflight``: image URLs checked before anything is paid;
- ``tokens``: token estimates (text and images); ``plan``: what a step would send and cost.
"""
