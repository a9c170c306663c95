"""What makes two calls the same: value addresses, normalized code, fingerprints, call addresses."""
