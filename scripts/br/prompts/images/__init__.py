"""Images of a request: local files sent inline, optional resizing, and their identity.

The field a step's `image_key` names may hold a URL (`http(s)://` or `data:`, sent as is) or a
local path (relative to the dataset's folder, or absolute). A local file is read, its type
sniffed from its bytes (never its name), and sent as a base64 data URL if it is one the API
takes: PNG, JPEG, WebP or a still GIF. Anything else (another format, an animated GIF, a
missing or unreadable file, one over the API's image size limit) raises `ImageSkip` with a
one-line reason for skipped.jsonl; it is never sent.

Where the bytes live (so `build/` stays proportionate to the dataset):

- requests.jsonl never holds image bytes. A local image's `url` there is a compact marker,
  `br-image:<sha256>:<mime>:<bytes>:<W>x<H>:<absolute path>`, naming the final bytes by their
  sha256 and the file that holds them.
- An image sent unchanged is read from the user's own file: nothing is copied. A resized image
  is written once, raw (not base64), to a content-addressed cache, `<cache>/<sha256>.<ext>`
  (the step's `images/` directory); entries no longer referenced are removed on the next build.
- The data URL is materialised only when chunk files are written (`identity.materialise`), and
  only for the requests still to send, after a check that the bytes still have the marker's
  digest.

So each image is stored inline (base64) only in the chunk that sends it, and beyond the chunk
files at most once more, raw, when it was resized. The alternative, inline data URLs in
requests.jsonl, would store every image twice in base64 (requests and chunks) and make every
stage that reads requests.jsonl (split, merge, plan) parse megabytes per record.

The modules (this package imports none of them, so `identity` stays light for its users):

- `formats`: the bytes: sniffing the type, checking, resizing (Pillow, imported when needed);
- `identity`: markers and data URLs, the image parts of a body, and a request's identity
  (`request_hash`), which covers an image's bytes, not the name it was sent under;
- `cache`: `LocalImages`, which resolves a step's image fields through an SQLite index and the
  content-addressed cache, and `stamp`, the digest make uses to notice a changed image.

Their token estimates are in ../tokens.py.
"""
