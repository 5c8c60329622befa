//! The worked examples of docs/PROTOCOL.md, byte for byte.
