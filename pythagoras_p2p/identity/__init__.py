"""What makes two calls the same: value addresses, normalized code, fingerprints, call addresses."""

from . import arrays, encoding

# numpy and pandas objects are encoded by content (arrays), before any address is made.
encoding.register_foreign_encoder(arrays.encode_array_or_frame)
