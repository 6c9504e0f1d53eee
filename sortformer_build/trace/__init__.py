"""Reference traces: NeMo's own loop on one recording, chunk by chunk (or window by window), in
a language-neutral file pair (`<name>.safetensors` + `<name>.json`) that a host runtime's tests
read, and the comparison of another trace with it. The format is described in docs/traces.md."""
