"""A fake Ollama server speaking real HTTP on 127.0.0.1, for the ollama SDK (and LiteLLM's
`ollama/` provider).

    with FakeOllama() as server:
        server.host                        # "http://127.0.0.1:<port>", for host= / OLLAMA_HOST
        server.add_model("tiny", dimensions=8, context_length=64, pulled=False)
        server.fail_next(503, count=2)     # also 500, 429, 404...; stall_next, drop_next
        server.requests_to("/api/embed")   # what the client sent

Endpoints, with the shapes Ollama uses:

* `POST /api/embed` `{model, input, truncate?, options?, keep_alive?}` ->
  `{model, embeddings, total_duration, load_duration, prompt_eval_count}`; an unknown model is
  404, an input over the context length with `truncate: false` is 400, an input containing the
  poison marker is 400. The fake's tokenizer counts a token per 4 UTF-8 bytes, so truncation
  keeps the first `4 * context_length` bytes.
* `POST /api/show` `{model}` -> `{modelfile, parameters, details, model_info, capabilities}`
  with `model_info["<arch>.context_length"]`; 404 for a model not pulled.
* `POST /api/pull` `{model, insecure, stream}` -> NDJSON progress lines ending in
  `{"status": "success"}` (or one JSON document when `stream` is false); a model the registry
  doesn't have gives an `{"error": ...}` line (streaming) or a 500.

Vectors are `tests.fake_openai.expected_vector` of the (truncated) text.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from tests.fake_http import FakeHTTPServer, json_response
from tests.fake_openai import expected_vector

BYTES_PER_TOKEN = 4


@dataclass
class Model:
    dimensions: int
    context_length: int
    architecture: str = "nomic-bert"
    num_ctx: int | None = None  # a `num_ctx` PARAMETER in the Modelfile, if any
    pulled: bool = True


def tokens(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)


def truncate(text: str, context: int) -> str:
    return text.encode("utf-8")[: context * BYTES_PER_TOKEN].decode("utf-8", errors="ignore")


def canonical(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def ollama_error(status: int, message: str) -> dict[str, Any]:
    return {"error": message}


class FakeOllama(FakeHTTPServer):
    def __init__(self, *, port: int = 0) -> None:
        super().__init__(port=port)
        self.models: dict[str, Model] = {}
        self.poison_marker = "POISON"
        self.add_model("nomic-embed-text", dimensions=768, context_length=2048, num_ctx=8192)
        self.add_model("all-minilm", dimensions=384, context_length=256, architecture="bert")

    @property
    def host(self) -> str:
        return self.url

    def add_model(
        self,
        name: str,
        *,
        dimensions: int,
        context_length: int,
        architecture: str = "nomic-bert",
        num_ctx: int | None = None,
        pulled: bool = True,
    ) -> None:
        """A model in the fake registry; `pulled=False` makes /api/pull necessary first."""
        with self.lock:
            self.models[canonical(name)] = Model(
                dimensions, context_length, architecture, num_ctx, pulled
            )

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/embed", self._embed)
        app.router.add_post("/api/show", self._show)
        app.router.add_post("/api/pull", self._pull)

    def _model(self, name: object) -> Model | None:
        if not isinstance(name, str):
            return None
        with self.lock:
            model = self.models.get(canonical(name))
        return model if model is not None and model.pulled else None

    # --- /api/embed --------------------------------------------------------------------------

    async def _embed(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        body = await self.read_json(request)
        status, response = await self.injected(request, ollama_error)
        if response is None:
            status, response = self._embed_answer(body)
        self.record(request, body, status, started)
        return response

    def _embed_answer(self, body: dict[str, Any] | None) -> tuple[int, web.Response]:
        if body is None:
            return 400, json_response(400, ollama_error(400, "invalid JSON"))
        name = body.get("model")
        model = self._model(name)
        if model is None:
            message = f'model "{name}" not found, try pulling it first'
            return 404, json_response(404, ollama_error(404, message))
        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) else raw
        if not isinstance(inputs, list) or not all(isinstance(t, str) for t in inputs):
            return 400, json_response(400, ollama_error(400, "invalid input type"))
        if any(self.poison_marker in text for text in inputs):
            return 400, json_response(400, ollama_error(400, "this input was flagged"))
        context = _runtime_context(model, body.get("options"))
        if body.get("truncate", True) is False and any(tokens(t) > context for t in inputs):
            message = "the input length exceeds the context length"
            return 400, json_response(400, ollama_error(400, message))
        kept = [truncate(text, context) for text in inputs]
        document = {
            "model": canonical(str(name)),
            "embeddings": [expected_vector(text, model.dimensions) for text in kept],
            "total_duration": 1_000_000,
            "load_duration": 1000,
            "prompt_eval_count": sum(tokens(text) for text in kept),
        }
        return 200, json_response(200, document)

    # --- /api/show ---------------------------------------------------------------------------

    async def _show(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        body = await self.read_json(request) or {}
        name = body.get("model")
        model = self._model(name)
        if model is None:
            status = 404
            response = json_response(404, ollama_error(404, f"model '{name}' not found"))
        else:
            status = 200
            arch = model.architecture
            parameters = f"num_ctx                        {model.num_ctx}" if model.num_ctx else ""
            response = json_response(
                200,
                {
                    "license": "Apache-2.0",
                    "modelfile": f"FROM {name}\n",
                    "parameters": parameters,
                    "template": "{{ .Prompt }}",
                    "details": {"format": "gguf", "family": arch, "parameter_size": "137M"},
                    "model_info": {
                        "general.architecture": arch,
                        "general.parameter_count": 136727040,
                        f"{arch}.context_length": model.context_length,
                        f"{arch}.embedding_length": model.dimensions,
                    },
                    "capabilities": ["embedding"],
                    "modified_at": "2025-01-01T00:00:00Z",
                },
            )
        self.record(request, body, status, started)
        return response

    # --- /api/pull ---------------------------------------------------------------------------

    async def _pull(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        body = await self.read_json(request) or {}
        name = str(body.get("model"))
        with self.lock:
            model = self.models.get(canonical(name))
        stream = body.get("stream", True) is not False
        if model is None:
            message = "pull model manifest: file does not exist"
            self.record(request, body, 500 if not stream else 200, started, error=message)
            if not stream:
                return json_response(500, ollama_error(500, message))
            return await self._ndjson(
                request, [{"status": "pulling manifest"}, ollama_error(500, message)]
            )
        with self.lock:
            model.pulled = True
        self.record(request, body, 200, started)
        if not stream:
            return json_response(200, {"status": "success"})
        lines: list[dict[str, Any]] = [{"status": "pulling manifest"}]
        for completed in (0, 1024, 2048):
            lines.append(
                {"status": "pulling 970aa74c", "digest": "sha256:970aa74c", "total": 2048}
                | {"completed": completed}
            )
        lines += [{"status": "verifying sha256 digest"}, {"status": "success"}]
        return await self._ndjson(request, lines)

    async def _ndjson(
        self, request: web.Request, lines: list[dict[str, Any]]
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for line in lines:
            await response.write(orjson.dumps(line) + b"\n")
        await response.write_eof()
        return response


def _runtime_context(model: Model, options: object) -> int:
    # Like Ollama: the request's num_ctx, else the Modelfile's, else the model's own; never
    # more than the model was trained for.
    requested = options.get("num_ctx") if isinstance(options, dict) else None
    num_ctx = requested if isinstance(requested, int) and requested > 0 else model.num_ctx
    return min(num_ctx or model.context_length, model.context_length)
