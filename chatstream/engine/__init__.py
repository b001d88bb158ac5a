"""The engine: prompts, sampling, the token sampler, the decode loop, the detokeniser, devices, the KV-cache
argument, model directories and continuous batching. It imports neither serving (fastapi, starlette) nor
cassette code; ``chatstream.exceptions`` is shared by all three subpackages."""
