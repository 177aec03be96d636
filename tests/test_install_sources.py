"""`install fa2|fa3|sage --source`: a local tree or archive is identified by the commit it records
and the version it declares, and refused (one line, exit 2) when it is not what the recipe pins;
FA3's build is narrowed to the workload's head dim and this machine's GPUs. Real git repositories
and real `git archive`s where git can make them; archives claiming the pinned commits are written
with tarfile exactly as git writes them (a pax global header whose comment is the commit)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from attn_doctor.actions.install import Install, plan_install
from attn_doctor.actions.plan import Command, Refusal
from attn_doctor.actions.recipes.context import InstallRequest
from attn_doctor.actions.source import declared_version, git_head, read_source
from attn_doctor.facts.model import Facts
from attn_doctor.facts.saved import load_facts
from attn_doctor.registry import recipes
from tests.conftest import FIXTURES, REPO, RealPackages, Venv, doctor, run

H100 = FIXTURES / "h100-check.json"
SRC = "/opt/torch/.venv/.attn-doctor/src"
FA3_COMMIT, CUTLASS_COMMIT = recipes.FA3_TREE.commit, recipes.FA3_TREE.submodules[0].commit
SAGE_COMMIT = recipes.SAGE_TREE.commit
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def facts() -> Facts:
    return load_facts(H100)


def plan(backend: str, *sources: Path, head_dims: tuple[tuple[int, int], ...] = (), on: Facts | None = None) -> Install:
    request = InstallRequest(backend, sources=tuple(map(str, sources)), head_dims=head_dims)
    return plan_install(on or facts(), request, here=False)


def commands(job: Install) -> list[Command]:
    return [s for s in job.plan.steps if isinstance(s, Command)]


def archive(path: Path, files: dict[str, str], commit: str | None, top: str = "") -> Path:
    """A tar as `git archive --prefix=TOP` writes it: the commit in the pax global header."""
    headers = {"comment": commit} if commit else {}
    with tarfile.open(
        path, "w:gz" if path.name.endswith("gz") else "w", format=tarfile.PAX_FORMAT, pax_headers=headers
    ) as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(top + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


SAGE_FILES = {"setup.py": "setup(\n    name='sageattention',\n    version='2.2.0',\n)\n", "csrc/fused/fused.cu": "//"}
FA3_FILES = {"hopper/__init__.py": '__version__ = "3.0.0"\n', "hopper/setup.py": "#", "README.md": "FA"}
CUTLASS_FILES = {"include/cutlass/cutlass.h": "#pragma once\n", "docs/x.md": "not built"}


def git(folder: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(folder), *args],
        capture_output=True,
        text=True,
        check=True,
        env={
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t",
            "HOME": str(folder),
            "PATH": "/usr/bin:/bin",
        },
    )
    return done.stdout.strip()


def repository(folder: Path, files: dict[str, str]) -> str:
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    git(folder, "init", "-q", "-b", "main")
    git(folder, "add", "-A")
    git(folder, "commit", "-q", "-m", "tree")
    return git(folder, "rev-parse", "HEAD")


# --- reading a source: the commit and the version ---


@needs_git
def test_the_commit_of_a_real_checkout_and_of_its_real_git_archives(tmp_path: Path) -> None:
    commit = repository(tmp_path / "repo", SAGE_FILES)
    assert git_head(tmp_path / "repo") == commit  # HEAD -> refs/heads/main, a loose ref
    git(tmp_path / "repo", "pack-refs", "--all")
    assert git_head(tmp_path / "repo") == commit  # the ref now only in packed-refs
    for fmt in ("tar", "tar.gz", "zip"):
        made = tmp_path / f"sage.{fmt}"
        git(tmp_path / "repo", "archive", f"--format={fmt}", "--prefix=SageAttention/", "-o", str(made), "HEAD")
        source = read_source(str(made))
        assert (source.commit, source.single) == (commit, "SageAttention/")
        rooted = source.rooted("setup.py")
        assert rooted is not None and declared_version(rooted, "setup.py") == "2.2.0"
    assert read_source(str(tmp_path / "repo")).kind == "checkout"


@needs_git
def test_a_submodule_checkout_is_read_through_its_gitdir_file(tmp_path: Path) -> None:
    commit = repository(tmp_path / "cutlass", CUTLASS_FILES)
    inner = tmp_path / "fa" / "csrc" / "cutlass"
    (tmp_path / "fa" / ".git" / "modules").mkdir(parents=True)
    shutil.move(tmp_path / "cutlass" / ".git", tmp_path / "fa" / ".git" / "modules" / "cutlass")
    inner.mkdir(parents=True)
    (inner / ".git").write_text("gitdir: ../../.git/modules/cutlass\n")
    assert git_head(inner) == commit


def test_a_plain_folder_records_no_commit(tmp_path: Path) -> None:
    (tmp_path / "setup.py").write_text(SAGE_FILES["setup.py"])
    assert read_source(str(tmp_path)).commit is None


def test_a_fifo_in_a_source_folder_is_refused_not_read(tmp_path: Path) -> None:
    """A FIFO where the version file or the git HEAD should be would block a reader forever:
    --source reads its files as every user-given file is read (attn_doctor.inputs)."""
    (tmp_path / "hopper").mkdir()
    os.mkfifo(tmp_path / "hopper" / "__init__.py")
    (tmp_path / ".git").mkdir()
    os.mkfifo(tmp_path / ".git" / "HEAD")
    started = time.monotonic()
    source = read_source(str(tmp_path))
    assert declared_version(source, "hopper/__init__.py") is None and source.commit is None
    assert time.monotonic() - started < 5


# --- plans from a source ---


def test_sage_from_a_git_archive_at_the_pinned_commit(tmp_path: Path) -> None:
    tar = archive(tmp_path / "sage.tar", SAGE_FILES, SAGE_COMMIT, top="SageAttention/")
    job = plan("sage", tar)
    _, unpack, build = commands(job)
    folder = f"{SRC}/SageAttention-{SAGE_COMMIT[:12]}"
    assert unpack.watch == (folder,)  # a folder that does not exist yet: undo removes it whole
    assert unpack.argv == (
        sys.executable,
        "-m",
        "attn_doctor.actions.source",
        str(tar),
        folder,
        "--strip",
        "SageAttention/",
    )
    assert unpack.watch == (folder,)  # undo removes what it unpacked
    assert "commit ff71e1e7ce08 (v2.2.0 + PR #307) and version 2.2.0 checked" in unpack.why
    assert build.argv[-2] == folder
    assert dict(build.env)["TORCH_CUDA_ARCH_LIST"] == "9.0"  # this GPU's arch only


def test_a_source_is_planned_offline(tmp_path: Path) -> None:
    tar = archive(tmp_path / "sage.tar", SAGE_FILES, SAGE_COMMIT)
    job = plan_install(facts(), InstallRequest("sage", offline=True, sources=(str(tar),)), here=False)
    assert all("--no-index" in c.argv for c in commands(job) if "pip" in c.argv)


@pytest.mark.parametrize(
    ("files", "commit", "refusal"),
    [
        (SAGE_FILES, "1" * 40, "is commit 111111111111, not a pinned one: thu-ml/SageAttention ff71e1e7ce08"),
        (SAGE_FILES, None, "records no commit"),
        ({"setup.py": "setup(version='2.1.1')"}, SAGE_COMMIT, "declares version 2.1.1 in setup.py, not 2.2.0"),
        ({"README.md": "no setup.py"}, SAGE_COMMIT, "declares version None"),
    ],
)
def test_the_wrong_source_is_refused(tmp_path: Path, files: dict[str, str], commit: str | None, refusal: str) -> None:
    with pytest.raises(Refusal, match=refusal.replace("(", r"\(").replace(")", r"\)")):
        plan("sage", archive(tmp_path / "sage.tar", files, commit))


def test_refusals_are_one_line_and_exit_2(tmp_path: Path) -> None:
    tar = archive(tmp_path / "sage.tar", SAGE_FILES, "2" * 40)
    code, out, err = doctor("install", "sage", "--facts", H100, "--dry-run", "--source", tar)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "not a pinned one" in err
    code, _, err = doctor("install", "fa4", "--facts", H100, "--dry-run", "--source", tar)
    assert code == 2 and "installs from wheels" in err
    code, _, err = doctor("install", "sage", "--facts", H100, "--dry-run", "--source", tmp_path / "nothing")
    assert code == 2 and "no such file or folder" in err


def test_fa3_from_an_archive_needs_its_cutlass_submodule(tmp_path: Path) -> None:
    fa3 = archive(tmp_path / "fa3.tar.gz", FA3_FILES, FA3_COMMIT, top="flash-attention/")
    with pytest.raises(Refusal, match=r"needs csrc/cutlass .* at 7127592069c2.*`git archive` leaves submodules out"):
        plan("fa3", fa3)
    cutlass = archive(tmp_path / "cutlass.tar.gz", CUTLASS_FILES, CUTLASS_COMMIT, top="cutlass/")
    _, tree, submodule, build = commands(plan("fa3", fa3, cutlass))
    folder = f"{SRC}/flash-attention-{FA3_COMMIT[:12]}"
    assert tree.argv[3:] == (str(fa3), folder, "--strip", "flash-attention/", "--only", "hopper", "--only", "README.md")
    assert submodule.argv[3:] == (str(cutlass), f"{folder}/csrc/cutlass", "--strip", "cutlass/", "--only", "include")
    assert build.argv[-2] == f"{folder}/hopper"


@needs_git
def test_fa3_from_a_checkout_checks_its_submodule_commit(tmp_path: Path) -> None:
    repository(tmp_path / "cutlass", CUTLASS_FILES)  # some other cutlass commit
    fa = tmp_path / "fa"
    shutil.copytree(tmp_path / "cutlass", fa / "csrc" / "cutlass", symlinks=True)
    for name, text in FA3_FILES.items():
        (fa / name).parent.mkdir(parents=True, exist_ok=True)
        (fa / name).write_text(text)
    (fa / ".git").mkdir()
    (fa / ".git" / "HEAD").write_text(FA3_COMMIT + "\n")  # a detached checkout of the pinned commit
    with pytest.raises(Refusal, match=r"csrc/cutlass in .* is at [0-9a-f]{12}, not 7127592069c2"):
        plan("fa3", fa)


def test_the_unpack_step_takes_only_the_parts_named_and_stays_inside(tmp_path: Path) -> None:
    cutlass = archive(tmp_path / "cutlass.tar", CUTLASS_FILES, CUTLASS_COMMIT, top="cutlass/")
    dest = tmp_path / "out"
    argv = [sys.executable, "-m", "attn_doctor.actions.source", str(cutlass), str(dest), "--strip", "cutlass/"]
    subprocess.run([*argv, "--only", "include"], check=True, capture_output=True)
    assert [p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()] == ["include/cutlass/cutlass.h"]
    evil = archive(tmp_path / "evil.tar", {"../../escaped.txt": "x"}, CUTLASS_COMMIT)
    done = subprocess.run(
        [sys.executable, "-m", "attn_doctor.actions.source", str(evil), str(dest)], capture_output=True, text=True
    )
    assert done.returncode != 0 and not (tmp_path / "escaped.txt").exists()


def test_a_zip_archive_unpacks_too(tmp_path: Path) -> None:
    made = tmp_path / "sage.zip"
    with zipfile.ZipFile(made, "w") as z:
        for name, text in SAGE_FILES.items():
            z.writestr("SageAttention-main/" + name, text)
        z.comment = SAGE_COMMIT.encode()  # where git archive --format=zip puts the commit
    _, unpack, _ = commands(plan("sage", made))
    subprocess.run([*unpack.argv[:3], str(made), str(tmp_path / "out"), *unpack.argv[5:]], check=True)
    assert (tmp_path / "out" / "setup.py").read_text() == SAGE_FILES["setup.py"]


def test_fa2_from_its_sdist_is_checked_by_version_and_built_as_it_is(tmp_path: Path) -> None:
    sdist = archive(
        tmp_path / "flash_attn-2.8.3.post2.tar.gz",
        {"PKG-INFO": "Metadata-Version: 2.1\nName: flash_attn\nVersion: 2.8.3.post2\n", "setup.py": "#"},
        None,
        top="flash_attn-2.8.3.post2/",
    )
    _, build = commands(plan("fa2", sdist))
    assert build.argv[-2] == str(sdist)
    assert dict(build.env)["FLASH_ATTN_CUDA_ARCHS"] == "90"
    older = archive(tmp_path / "flash_attn-2.8.3.tar.gz", {"PKG-INFO": "Version: 2.8.3\n"}, None, top="f/")
    with pytest.raises(Refusal, match=r"is flash-attn 2.8.3, not 2.8.3.post2"):
        plan("fa2", older)


# --- FA3's narrow build ---


def env_of(job: Install) -> dict[str, str]:
    return dict(commands(job)[-1].env)


def switches(job: Install) -> set[str]:
    return {
        k.removeprefix("FLASH_ATTENTION_DISABLE_") for k, v in env_of(job).items() if "DISABLE" in k and v == "TRUE"
    }


def test_fa3_for_head_dim_128_builds_four_kernel_files_on_hopper() -> None:
    job = plan("fa3", head_dims=((128, 128),))
    assert switches(job) == {
        "SM80",
        "HDIM64",
        "HDIM96",
        "HDIM192",
        "HDIM256",
        "HDIMDIFF64",
        "HDIMDIFF192",
        "FP8",
        "SPLIT",
        "PAGEDKV",
        "APPENDKV",
        "PACKGQA",
        "LOCAL",
        "SOFTCAP",
    }
    assert "FP16" not in switches(job) and "BACKWARD" not in switches(job) and "VARLEN" not in switches(job)
    assert env_of(job)["FLASH_ATTENTION_FORCE_BUILD"] == "TRUE"  # no network: no wheel download attempt
    assert any("4 kernel files (4 sm90a, 0 sm80; everything is 290)" in n for n in job.plan.notes)
    assert any("narrow FA3 build for head dim 128" in n for n in job.plan.notes)


def test_fa3_without_a_head_dim_builds_every_head_dim_for_this_gpu_only() -> None:
    job = plan("fa3")
    assert switches(job) == {"SM80"}
    assert any("230 kernel files" in n and "--head-dim" in n for n in job.plan.notes)


def test_fa3_keeps_ampere_kernels_where_an_ampere_gpu_is() -> None:
    assert "SM80" not in switches(plan("fa3", on=load_facts(FIXTURES / "machines" / "mixed-h100-a100.json")))


@pytest.mark.parametrize(
    ("head_dim", "kept"),
    [
        ((80, 80), {"HDIM96"}),
        ((64, 64), {"HDIM64"}),
        ((256, 256), {"HDIM256"}),
        ((192, 128), {"HDIM192", "HDIMDIFF192"}),
    ],
)
def test_fa3_builds_the_bucket_a_head_dim_rounds_up_to(head_dim: tuple[int, int], kept: set[str]) -> None:
    off = switches(plan("fa3", head_dims=(head_dim,)))
    every = {f"HDIM{d}" for d in recipes.FA3_HEAD_DIMS} | {"HDIMDIFF64", "HDIMDIFF192"}
    assert every - off == kept


def test_fa3_refuses_a_head_dim_over_256() -> None:
    with pytest.raises(Refusal, match="up to 256"):
        plan("fa3", head_dims=((64, 64), (512, 512)))


def test_fa3_for_the_standard_head_dims_builds_both_and_says_so() -> None:
    """`--head-dim 64 --head-dim 128`: a bench's standard shapes, each on its own kernel (a build
    for 128 alone runs head dim 64 on the 128 kernel)."""
    job = plan("fa3", head_dims=((64, 64), (128, 128)))
    kept = {f"HDIM{d}" for d in recipes.FA3_HEAD_DIMS} - switches(job)
    assert kept == {"HDIM64", "HDIM128"}
    assert any("8 kernel files (8 sm90a, 0 sm80" in n for n in job.plan.notes)
    assert any("narrow FA3 build for head dim 64/128:" in n for n in job.plan.notes)


def test_a_repeated_head_dim_on_the_command_line() -> None:
    code, out, _ = doctor("install", "fa3", "--facts", H100, "--dry-run", "--head-dim", "64", "--head-dim", "192,128")
    assert code == 0 and "narrow FA3 build for head dim 64/192 (q,v 192,128)" in out
    assert "FLASH_ATTENTION_DISABLE_HDIMDIFF192" not in out and "FLASH_ATTENTION_DISABLE_HDIM128=TRUE" in out
    code, _, err = doctor("install", "fa3", "--facts", H100, "--dry-run", "--head-dim", "64", "--head-dim", "x")
    assert code == 2 and "--head-dim 'x'" in err


def test_head_dims_come_from_a_model_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"hidden_size": 4096, "num_attention_heads": 32}')
    code, out, _ = doctor("install", "fa3", "--facts", H100, "--dry-run", "--model", tmp_path)
    assert code == 0 and "narrow FA3 build for head dim 128" in out and "FLASH_ATTENTION_DISABLE_HDIM64=TRUE" in out


def test_kernel_file_counts_follow_upstreams_lists() -> None:
    # hopper/setup.py @0251105a with nothing disabled: 230 sm90a files and 60 sm80 files
    assert recipes.fa3_kernel_files(frozenset()) == (230, 60)
    assert recipes.fa3_kernel_files(frozenset({"FP8"})) == (170, 60)  # e4m3: forward only
    assert recipes.fa3_kernel_files(frozenset({"BACKWARD", "SM80"})) == (220, 0)


def test_a_build_is_kept_as_a_wheel_that_installs_the_same_files(tmp_path: Path, real: RealPackages) -> None:
    """scripts/wheel_from_installed.py: FA2 compiled once (~22 min on the H100) is packed from its
    RECORD into the wheel that `install fa2 --find-links` takes on the next node."""
    first, second = Venv(tmp_path / "first"), Venv(tmp_path / "second")
    first.install(real.fa2_wheel)
    script = REPO / "scripts" / "wheel_from_installed.py"
    run(real.torch_python, script, "flash-attn", "--site", first.site, "--out", tmp_path / "kept")  # has `wheel`
    [kept] = (tmp_path / "kept").glob("flash_attn-*.whl")
    assert kept.name == real.fa2_wheel.name
    second.install(kept)

    def files(site: Path) -> set[Path]:
        return {p.relative_to(site) for p in site.rglob("*") if p.is_file() and "__pycache__" not in p.parts}

    installed = files(first.site)
    assert installed == files(second.site)
    written_by_pip = {"RECORD", "direct_url.json"}  # the hashes of what it wrote; the wheel's path
    kept_files = {f for f in installed if f.name not in written_by_pip}
    assert all((first.site / f).read_bytes() == (second.site / f).read_bytes() for f in kept_files)


def test_build_fa3_from_carried_sources_writes_its_wheel_from_the_checked_tree(tmp_path: Path) -> None:
    """What a cluster without the network builds once (scripts/device_prebuilt_round.sh): the same
    checked tree as install --source, its last step `pip wheel` of hopper/ into the wheelhouse."""
    fa3 = archive(tmp_path / "fa3.tar.gz", FA3_FILES, FA3_COMMIT, top="flash-attention/")
    cutlass = archive(tmp_path / "cutlass.tar.gz", CUTLASS_FILES, CUTLASS_COMMIT, top="cutlass/")
    request = InstallRequest("fa3", "pip", sources=(str(fa3), str(cutlass)), head_dims=((128, 128),), wheelhouse="/w")
    job = plan_install(facts(), request, here=False)
    *_, build = commands(job)
    folder = f"{SRC}/flash-attention-{FA3_COMMIT[:12]}"
    assert build.argv[-1] == f"{folder}/hopper" and build.argv[build.argv.index("--wheel-dir") + 1] == "/w"
    assert "wheel" in build.argv and "install" not in build.argv
    assert dict(build.env)["FLASH_ATTENTION_DISABLE_HDIM64"] == "TRUE"  # narrowed as install narrows it
    assert job.plan.action == "build-fa3"
