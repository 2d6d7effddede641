"""The server behind `gancli explore`: one page, its two static files, and five GET routes.

    /                 the page (static/index.html)
    /static/NAME      app.js, style.css: a fixed list, read once from the package; never a path
    /api/info         the run's checkpoints and the chosen one's latent spec (codes, class names)
    /api/image        one image as PNG: ?seed=S&ckpt=ID&ema=1&truncation=0.7&c1=3&c2=0.5 ...
    /api/strip        neighbours of that image along one code (or seeds): ... &along=c2&values=-1,0,1
    /api/draw         the codes a seed draws (what `sample --seed S` uses when no --code is given)
    /api/command      the `gancli sample ...` line that writes the same image

Images are rendered here, on the server, with the EMA generator (the raw one on request), by the
very functions `gancli sample` runs: the seed's draw (`LatentSpec.sample` on a CPU generator),
the truncation trick (`truncate`), then each code fixed (`fix_codes`), then `generate`, and the
PNG encoded as `save_grid` encodes a one-image grid. So an image saved from the page is the file `gancli sample --n 1` writes, byte for
byte. (Rendering in the browser from the ONNX export with onnxruntime-web was the alternative: it
needs a wasm runtime of several MB, fetched from the network or shipped with gancli, and its
kernels round differently from torch's, so its pixels would not be `sample`'s; a tiny generator
renders in a few milliseconds on a CPU, well under what a slider needs.)

Web stack: Werkzeug (Pallets; already pulled in by tensorboard) for the routing, request
parsing, HTTP errors and a threaded HTTP/1.1 server with keep-alive. The standard library's
http.server would have meant writing the routing, query parsing, status lines and error pages by
hand, which is the plumbing worth not owning. The server is for one person on this machine:
bound to 127.0.0.1 by default, with a Host check against DNS rebinding while it is.

Every bad request (a value out of range, an unknown code or checkpoint, a non-number, a strip too
long, a query too large, a path with "..") is a 400 with {"error": "one line"}; a gancli bug is a
500 with one line, and one line on the server's stderr, never a traceback (unless --debug).
"""

from __future__ import annotations

import io
import ipaddress
import json
import math
import re
import shlex
import socket
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler, get_sockaddr, select_address_family
from werkzeug.wrappers import Request, Response

from gancli.checkpoint import STEP_DIR, LoadedGenerator, find_generator, latest_step_dir, load_generator, step_dirs
from gancli.errors import GancliError
from gancli.generate import MAX_SEED, generate, pick_device
from gancli.latent import MAX_TRUNCATION, MAX_VALUE, Latents, LatentSpec, check_truncation, truncate
from gancli.viz import _auto_scale, grid, to_pil

MAX_QUERY = 4_096        # characters of one query string
MAX_STRIP = 25           # images in one strip of neighbours
CACHE = 4                # generators kept loaded (one per checkpoint file)
PADDING = 2              # pixels between a strip's images (the grids' padding)
RESERVED = ("seed", "ckpt", "ema", "truncation")       # every other query key names a code (c1, label, z7)
STRIP_KEYS = ("along", "values")
STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
# The page loads nothing from anywhere but this server (and its own blob: images).
HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; "
                                "img-src 'self' blob: data:; connect-src 'self'; "
                                "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_SEED = re.compile(r"[0-9]{1,10}")


def _short(text: str, at: int = 60) -> str:
    return text if len(text) <= at else text[: at - 3] + "..."


# ---------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Checkpoint:
    id: str                      # what the page sends: "step-0000400", "best", "file"
    label: str                   # what its selector shows
    path: Path                   # what find_generator / load_generator take
    step: int | None
    has_ema: bool
    run_args: tuple[str, ...]    # RUN (and --step N) in `gancli sample RUN ...`


def _has_generator(d: Path) -> bool:
    return (d / "generator.safetensors").is_file() or (d / "generator_ema.safetensors").is_file()


def list_checkpoints(run: str) -> dict[str, Checkpoint]:
    """RUN's checkpoints by id, oldest step first, then named ones (best/). A step directory or
    a generator file is one checkpoint. Ids are keys only: no path is ever built from a request."""
    p = Path(run)
    if not p.exists():
        raise GancliError(f"no such run, checkpoint or file: {run}")
    if p.is_file():
        return {"file": Checkpoint("file", p.name, p, None, False, (run,))}
    if _has_generator(p):   # a step directory (or a folder holding a generator file)
        return {p.name: Checkpoint(p.name, p.name, p, None,
                                   (p / "generator_ema.safetensors").is_file(), (run,))}
    found: dict[str, Checkpoint] = {}
    for step, d in step_dirs(p):
        if _has_generator(d):
            found[d.name] = Checkpoint(d.name, f"step {step:,}", d, step,
                                       (d / "generator_ema.safetensors").is_file(),
                                       (run, "--step", str(step)))
    root = p / "checkpoints"
    named = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
                   and not STEP_DIR.match(d.name) and _has_generator(d)) if root.is_dir() else []
    for d in named:
        found[d.name] = Checkpoint(d.name, d.name, d, None,
                                   (d / "generator_ema.safetensors").is_file(),
                                   (str(Path(run) / "checkpoints" / d.name),))
    if not found:
        latest_step_dir(p)   # its one line: "RUN has no checkpoints (expected ...)"
        raise GancliError(f"{run} holds no generator files")
    return found


# ---------------------------------------------------------------------- the explorer


@dataclass(frozen=True)
class State:
    """What one request asks for: a checkpoint, the seed and the codes the page set."""
    ckpt: str
    ema: bool
    seed: int
    codes: tuple[str, ...]       # "NAME=VALUE", as `sample --code` takes them, in the page's order
    truncation: float = 1.0      # psi, as `sample --truncation` takes it
    truncation_text: str = "1"


def _one(args: MultiDict, key: str) -> str | None:
    values = args.getlist(key)
    if len(values) > 1:
        raise GancliError(f"{_short(key)} is given {len(values)} times: give it once")
    return values[0] if values else None


def seed_of(text: str, what: str = "seed") -> int:
    if not _SEED.fullmatch(text.strip()) or int(text) > MAX_SEED:
        raise GancliError(f"{what}={_short(text)!s}: a seed is an integer 0..{MAX_SEED}")
    return int(text)


def spec_json(spec: LatentSpec) -> dict[str, Any]:
    return {"noise_dim": spec.noise_dim, "noise": spec.noise,
            "codes": [{"name": c.name, "kind": c.kind, "size": c.size, "low": c.low,
                       "high": c.high, "role": c.role, "names": list(c.value_names)}
                      for c in spec.codes]}


def value_text(x: float) -> str:
    """A float32 code value as the shortest text that `--code` reads back to the same float32."""
    f = np.float32(x)
    text = np.format_float_positional(f, unique=True, trim="-")
    if np.float32(float(text)) != f:   # (double rounding: never seen, but cheap to rule out)
        text = f"{float(f):.9g}"
    return "0" if text == "-0" else text


class Explorer:
    """A run's generators behind a lock: loaded on first use and kept (CACHE of them), run one
    request at a time under torch.inference_mode."""

    def __init__(self, run: str, device: str | None = None, cache: int = CACHE,
                 truncation: float = 1.0) -> None:
        self.run = run
        self.truncation = check_truncation(truncation)   # what the page starts with
        self.device = pick_device(device)
        self._lock = threading.Lock()    # one model call at a time; torch's threads are the CPU's
        self._cache: OrderedDict[Path, LoadedGenerator] = OrderedDict()
        self._cache_size = max(1, cache)
        self.checkpoints = list_checkpoints(run)
        self.default = self._newest()
        self.generator(self.default, True)   # a bad checkpoint fails now, before any page

    # --------------------------------------------------------------- checkpoints
    def _newest(self) -> str:
        steps = [c for c in self.checkpoints.values() if c.step is not None]
        return (steps[-1] if steps else next(iter(self.checkpoints.values()))).id

    def refresh(self) -> None:
        """Look again: a run still training writes new checkpoints (and prunes old ones)."""
        try:
            self.checkpoints = list_checkpoints(self.run)
        except (GancliError, OSError):
            pass     # keep what was there; loading one that went says so

    def checkpoint(self, ckpt: str) -> Checkpoint:
        if ckpt not in self.checkpoints:
            self.refresh()
        if ckpt not in self.checkpoints:
            known = ", ".join(self.checkpoints)
            raise GancliError(f"unknown checkpoint {_short(ckpt)!r}; this run's: {_short(known, 300)}")
        return self.checkpoints[ckpt]

    def generator(self, ckpt: str, ema: bool = True) -> LoadedGenerator:
        file = find_generator(self.checkpoint(ckpt).path, ema=ema)
        with self._lock:
            g = self._cache.get(file)
            if g is None:
                g = load_generator(file, device=self.device)
                self._cache[file] = g
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            self._cache.move_to_end(file)
            return g

    # --------------------------------------------------------------- requests
    def state(self, args: MultiDict, extra: tuple[str, ...] = ()) -> State:
        for key in args:
            _one(args, key)
        ckpt = args.get("ckpt") or self.default
        ema_text = args.get("ema", "1").strip().lower()
        if ema_text not in ("1", "0", "true", "false"):
            raise GancliError(f"ema={_short(ema_text)}: ema is 1 (the EMA generator) or 0 (the raw one)")
        seed = seed_of(args.get("seed", "0"))
        codes = tuple(f"{k}={v}" for k, v in args.items() if k not in RESERVED + extra)
        psi_text = args.get("truncation", "1").strip()
        try:
            psi = float(psi_text)
        except ValueError:
            raise GancliError(f"truncation={_short(psi_text)}: not a number") from None
        check_truncation(psi, f"truncation={_short(psi_text)}: truncation")
        return State(ckpt, ema_text in ("1", "true"), seed, codes, psi, psi_text)

    def latents(self, spec: LatentSpec, seed: int, codes: tuple[str, ...],
                psi: float = 1.0) -> Latents:
        """Exactly the latents of `gancli sample --n 1 --seed SEED --truncation PSI --code
        NAME=VALUE ...`: the seed's draw on a CPU generator, the noise truncated, then each code
        fixed, by sample's own functions in sample's order."""
        from gancli.cli.base import fix_codes

        drawn = truncate(spec.sample(1, torch.Generator().manual_seed(seed)), psi)
        return fix_codes(spec, drawn, list(codes), "code")

    def png(self, g: LoadedGenerator, latents: Latents, nrow: int = 1) -> bytes:
        """PNG bytes as `save_grid` writes them (one image: alone, enlarged as sample enlarges)."""
        with self._lock, torch.inference_mode():
            images = generate(g.generator, latents, self.device)
        buf = io.BytesIO()
        to_pil(grid(images, nrow)).save(buf, format="PNG")
        return buf.getvalue()

    def image(self, args: MultiDict) -> bytes:
        st = self.state(args)
        g = self.generator(st.ckpt, st.ema)
        return self.png(g, self.latents(g.spec, st.seed, st.codes, st.truncation))

    def strip(self, args: MultiDict) -> bytes:
        st = self.state(args, STRIP_KEYS)
        along = (args.get("along") or "").strip()
        items = [v.strip() for v in (args.get("values") or "").split(",")]
        if not along:
            raise GancliError("along: name the code the strip walks (c1, label, ...) or seed")
        if not items or items == [""]:
            raise GancliError("values: give the strip's values, comma-separated (e.g. -1,0,1)")
        if len(items) > MAX_STRIP:
            raise GancliError(f"values: a strip holds at most {MAX_STRIP} images, got {len(items):,}")
        g = self.generator(st.ckpt, st.ema)
        spec = g.spec
        if along == "seed":
            seeds = [seed_of(v, "values: seed") for v in items]
            from gancli.cli.base import fix_codes

            rows = [truncate(spec.sample(1, torch.Generator().manual_seed(s)), st.truncation)
                    for s in seeds]
            latents = fix_codes(spec, {k: torch.cat([r[k] for r in rows]) for k in rows[0]},
                                list(st.codes), "code")
        else:
            spec.check_name(along)
            values = [spec.parse_value(along, v, what=f"values: {along}={_short(v)}") for v in items]
            one = self.latents(spec, st.seed, st.codes, st.truncation)
            many = {k: v.repeat_interleave(len(values), dim=0) for k, v in one.items()}
            latents = spec.fix(many, along, torch.tensor(values))
        return self.png(g, latents, nrow=len(items))

    def draw(self, args: MultiDict) -> dict[str, Any]:
        st = self.state(args)
        g = self.generator(st.ckpt, st.ema)
        drawn = g.spec.sample(1, torch.Generator().manual_seed(st.seed))
        codes = {c.name: (str(int(drawn[c.name][0])) if c.categorical
                          else value_text(float(drawn[c.name][0]))) for c in g.spec.codes}
        return {"seed": st.seed, "codes": codes}

    def command(self, args: MultiDict) -> dict[str, Any]:
        st = self.state(args)
        ck = self.checkpoint(st.ckpt)
        g = self.generator(st.ckpt, st.ema)
        self.latents(g.spec, st.seed, st.codes, st.truncation)    # refuses what sample would refuse
        argv = ["gancli", "sample", *ck.run_args, "--n", "1", "--seed", str(st.seed)]
        if st.truncation != 1:
            argv += ["--truncation", st.truncation_text]
        for item in st.codes:
            argv += ["--code", item]
        if not st.ema and ck.has_ema:
            argv.append("--no-ema")
        if self.device.type == "cpu" and torch.cuda.is_available():
            argv += ["--device", "cpu"]    # sample would take the GPU, whose pixels may differ
        return {"command": shlex.join(argv), "argv": argv}

    def info(self, args: MultiDict) -> dict[str, Any]:
        self.refresh()
        st = self.state(args)
        g = self.generator(st.ckpt, st.ema)
        size = g.config.data.image_size
        return {
            "run": self.run, "model": g.config.model, "image_size": size,
            "channels": g.config.data.channels, "checkpoint": st.ckpt, "default": self.default,
            "step": g.step, "ema": g.ema, "device": str(self.device),
            "checkpoints": [{"id": c.id, "label": c.label, "step": c.step, "ema": c.has_ema}
                            for c in self.checkpoints.values()],
            "spec": spec_json(g.spec),
            # a strip is a grid: `padding` px, then each image `cell` px wide and `padding` px
            "strip": {"cell": size * _auto_scale(size), "padding": PADDING, "max": MAX_STRIP},
            "seed_max": MAX_SEED, "max_value": MAX_VALUE,
            "truncation": self.truncation, "max_truncation": MAX_TRUNCATION,
        }


# ---------------------------------------------------------------------- the WSGI app


URLS = Map([Rule("/", endpoint="page", methods=["GET"]),
            Rule("/static/<name>", endpoint="static", methods=["GET"]),
            *(Rule(f"/api/{n}", endpoint=n, methods=["GET"])
              for n in ("info", "image", "strip", "draw", "command"))])
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json", headers=HEADERS)


def _error(status: int, message: str) -> Response:
    return _json(status, {"error": " ".join(message.split())})


def _assets() -> dict[str, tuple[bytes, str]]:
    root = resources.files("gancli.explore").joinpath("static")
    out = {"": (root.joinpath("index.html").read_bytes(), "text/html; charset=utf-8")}
    for name, kind in STATIC.items():
        out[name] = (root.joinpath(name).read_bytes(), kind)
    return out


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def make_app(explorer: Explorer, allowed_hosts: set[str] | None = None,
             log: Callable[[str], None] | None = None) -> Callable:
    """The WSGI app. `allowed_hosts`: the Host names it answers (None: any)."""
    assets = _assets()
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))

    def dispatch(request: Request) -> Response:
        raw = request.environ.get("REQUEST_URI") or request.environ.get("RAW_URI") or ""
        path = request.path
        if ".." in path or ".." in raw.split("?", 1)[0] or "\\" in path or "\x00" in path:
            raise GancliError("paths with '..' (or backslashes) are refused: this server serves "
                              "its page and its API only")
        if allowed_hosts is not None and _host_name(request.host).lower() not in allowed_hosts:
            raise GancliError(f"Host {_short(request.host)!r} is not this server's name: open "
                              f"it as http://127.0.0.1:PORT/ (a guard against DNS rebinding)")
        if len(request.query_string) > MAX_QUERY:
            raise GancliError(f"the query is {len(request.query_string):,} bytes, more than the "
                              f"{MAX_QUERY:,} this server reads")
        endpoint, values = URLS.bind_to_environ(request.environ).match()
        args = request.args
        if endpoint == "page":
            body, kind = assets[""]
            return Response(body, content_type=kind, headers=HEADERS)
        if endpoint == "static":
            if values["name"] not in STATIC:
                return _error(404, f"no such file: /static/{_short(values['name'])}")
            body, kind = assets[values["name"]]
            return Response(body, content_type=kind, headers=HEADERS)
        start = time.perf_counter()
        if endpoint in ("image", "strip"):
            png = explorer.image(args) if endpoint == "image" else explorer.strip(args)
            ms = (time.perf_counter() - start) * 1e3
            return Response(png, mimetype="image/png",
                            headers={**HEADERS, "Server-Timing": f"render;dur={ms:.2f}"})
        body = getattr(explorer, endpoint)(args)
        return _json(200, body)

    @Request.application
    def app(request: Request) -> Response:
        try:
            return dispatch(request)
        except GancliError as e:
            return _error(400, str(e))
        except HTTPException as e:   # no such route (404), not a GET (405)
            what = {404: "no such page", 405: "only GET is served"}.get(e.code or 0, e.name)
            return _error(e.code or 400, f"{what}: {_short(request.path)}")
        except Exception as e:   # a gancli bug: one line here and to the page, no traceback
            from gancli.cli.base import debugging, explain

            if debugging():
                import traceback

                traceback.print_exc()
            code, message = explain(e)
            log(f"error: {request.path}: {message}")
            return _error(400 if code == 2 else 500, message)

    return app


# ---------------------------------------------------------------------- the server


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass    # a slider drag is dozens of requests: no line for each


class _Server(ThreadedWSGIServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver would print a traceback; a broken connection is worth one line at most
        e = sys.exc_info()[1]
        if not isinstance(e, (ConnectionError, TimeoutError)):
            print(f"note: a request from {client_address} failed: {type(e).__name__}: {e}",
                  file=sys.stderr)


def make_server(explorer: Explorer, host: str = "127.0.0.1", port: int = 0) -> _Server:
    """A threaded server for `explorer` on host:port (0: a free port), bound and listening, or
    one line saying why not. `server.url` is the address to open."""
    if not 0 <= port <= 65535:
        raise GancliError(f"--port must be 0 (a free port) or 1..65535, got {port}")
    family = select_address_family(host, port)
    try:
        address = get_sockaddr(host, port, family)
        sock = socket.socket(family, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise GancliError(f"--host {host}: cannot listen there ({getattr(e, 'strerror', None) or e})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        import errno

        why = e.strerror or str(e)
        if e.errno == errno.EADDRINUSE:
            why += ": pick another --port, or leave --port out for a free one"
        raise GancliError(f"--host {host} --port {port}: cannot listen there: {why}") from None
    bound = sock.getsockname()
    try:
        loopback = host == "localhost" or ipaddress.ip_address(bound[0]).is_loopback
    except ValueError:
        loopback = False
    allowed = (LOOPBACK_NAMES | {host.lower()}) if loopback else None
    try:
        server = _Server(host, bound[1], make_app(explorer, allowed), handler=_QuietHandler,
                         fd=sock.fileno())
    finally:
        sock.close()   # the server holds its own copy of the socket
    shown = "127.0.0.1" if bound[0] in ("0.0.0.0", "::") else bound[0]
    shown = f"[{shown}]" if ":" in shown else shown
    server.url = f"http://{shown}:{bound[1]}/"   # type: ignore[attr-defined]
    server.loopback = loopback                    # type: ignore[attr-defined]
    return server
