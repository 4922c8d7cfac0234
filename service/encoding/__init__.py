"""Response encoding: JSON (with cached row text), base64 and raw binary bodies."""
