"""pasta-push RUN --repo-id NAME: a run's adapter/ folder, model card included, to the Hugging Face Hub.

Nothing is converted: the folder is uploaded as pasta-train wrote it (adapter_config.json, the safetensors file,
README.md, the Hub model card with the run's scores), so a downloaded copy (`huggingface_hub.snapshot_download`)
is read by `load_adapter`, pasta-predict and pasta-serve as the run's own folder is. The repository is created
when it does not exist. The token is huggingface_hub's own (HF_TOKEN, or `hf auth login`).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from pasta_cli.adapter import read_adapter_config
from pasta_cli.errors import Parser, PastaError, run_cli
from pasta_cli.run_folder import CARD, find_adapter

PROG = "pasta-push"
REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class PushError(PastaError):
    """The Hub refused or could not be reached (exit 1): nothing about the run folder is wrong."""

    exit_code = 1


def parser() -> Parser:
    p = Parser(prog=PROG, description="Upload a pasta-train run's adapter/ folder (with its model card) to the "
               "Hugging Face Hub.")
    p.add_argument("run", help="a pasta-train run folder, or its adapter/ folder")
    p.add_argument("--repo-id", required=True, help="the Hub repository: user/name or org/name")
    p.add_argument("--private", action="store_true", help="create the repository private (default: public)")
    p.add_argument("--revision", default=None, help="the branch to push to (default: the repository's main)")
    p.add_argument("--message", default=None, help="the commit message (default: 'pasta-cli: <task> adapter')")
    return p


def pushable_folder(path) -> Path:
    """The adapter folder of a run folder (or the folder itself), refused in one line without an adapter or card."""
    folder, _ = find_adapter(path)
    read_adapter_config(folder)  # one line for a folder that holds no adapter
    if not (folder / CARD).is_file():
        raise PastaError(f"'{folder}' has no {CARD} (the model card pasta-train writes at the end of a run): "
                         "finish the run (resume=true), or push a run of this pasta-cli version")
    return folder


def push(argv: list[str] | None = None) -> str:
    """Create the repository if needed and upload the folder; returns the commit's URL."""
    a = parser().parse_args(argv)
    if not REPO_ID.match(a.repo_id):
        raise PastaError(f"--repo-id {a.repo_id!r}: give user/name or org/name")
    folder = pushable_folder(a.run)
    task = read_adapter_config(folder).get("task") or "a"
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(a.repo_id, private=a.private, exist_ok=True)
        commit = api.upload_folder(folder_path=str(folder), repo_id=a.repo_id, revision=a.revision,
                                   commit_message=a.message or f"pasta-cli: {task} adapter")
    except Exception as e:  # noqa: BLE001 - offline, no token, no permission, the network: one line
        reason = str(e).splitlines()[0] if str(e) else ""
        raise PushError(f"cannot push '{folder}' to {a.repo_id} ({type(e).__name__}: {reason}): check the "
                        "network, HF_HUB_OFFLINE and your token (HF_TOKEN or `hf auth login`)") from None
    return str(getattr(commit, "commit_url", commit))


def main(argv: list[str] | None = None) -> None:
    code = run_cli(PROG, lambda: print(f"{PROG}: pushed: {push(argv)}"))
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
