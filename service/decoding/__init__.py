"""Request decoding: body bytes and headers in, validated numpy ids and options out."""
