"""git without the repository's own config: the audited party's repository is hostile.

A repository's ``.git/config`` (and whatever it includes), its hooks and its index
belong to whoever made the repository.  Config can name commands that git runs on
its own: ``core.fsmonitor`` on every index read, ``filter.<driver>.clean`` and
``.smudge`` for files whose ``.gitattributes`` name that driver, hooks under
``core.hooksPath``, ``core.sshCommand``, credential helpers, ``ext::`` transports.
So no git command here ever reads the audited repository's config or index:

* **a checkout we read** (``build``, ``verify --source``): :func:`find_checkout`
  resolves ``HEAD`` itself (no git), and :func:`reading` runs git against a private
  git directory: our own ``config``, a detached ``HEAD`` at that commit, no hooks,
  the repository's objects borrowed read-only through ``objects/info/alternates``,
  and a fresh index made from ``HEAD`` (so neither a planted fsmonitor, nor
  skip-worktree bits, nor stale stat data in the vendor's index can hide a change);
* **a repository we fetch** (``verify --git``): :func:`fetch_commit` makes a new
  repository with ``git init --template=`` (no hooks), borrows the objects of a
  local repository through alternates (no clone transport, no ``upload-pack`` run
  in the hostile repository) or clones a remote URL with ``--`` before it, resolves
  the commit among objects only (a tag or branch named like a commit id never
  wins), and checks it out detached.

Every invocation also runs with the system and global config switched off, a
fixed environment, and command-line config that turns off fsmonitor, hooks,
credential helpers, pagers, submodule recursion and every transport but
https/http/ssh/git (``-c`` has the highest precedence of all config scopes).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from enclave_audit.errors import BuildStepFailed, InvalidInput
from enclave_audit.tools import Completed, require, run

#: command-line config for every git run (highest precedence of all scopes)
SAFE_CONFIG: tuple[tuple[str, str], ...] = (
    ("core.fsmonitor", "false"),
    ("core.hooksPath", "/dev/null"),
    ("core.attributesFile", "/dev/null"),
    ("core.excludesFile", "/dev/null"),
    ("core.untrackedCache", "false"),
    ("core.pager", "cat"),
    ("core.askPass", ""),
    ("core.sshCommand", "ssh"),
    ("credential.helper", ""),
    ("protocol.allow", "never"),
    ("protocol.https.allow", "always"),
    ("protocol.http.allow", "always"),
    ("protocol.ssh.allow", "always"),
    ("protocol.git.allow", "always"),
    ("protocol.file.allow", "never"),
    ("submodule.recurse", "false"),
    ("fetch.recurseSubmodules", "false"),
    ("transfer.fsckObjects", "true"),
    ("gc.auto", "0"),
    ("maintenance.auto", "false"),
    ("advice.detachedHead", "false"),
    ("init.defaultBranch", "main"),
)
#: environment variables passed through to git (transport needs: ssh agent, proxies)
_PASS_ENV = ("HOME", "SSH_AUTH_SOCK", "http_proxy", "https_proxy", "no_proxy",
             "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")  # fmt: skip
_OID = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_PREFIX = re.compile(r"^[0-9a-f]{4,64}$")
_SMALL = 4096
#: how long one git command may run (a config include naming a FIFO must not hang us)
GIT_TIMEOUT = 600.0


def git_env() -> dict[str, str]:
    """A fixed environment: no system or global config, no prompts, no replace refs."""
    env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
    env.update(
        {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LC_ALL": "C",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_ATTR_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "",
            "GIT_PAGER": "cat",
            "GIT_EDITOR": "false",
            "GIT_NO_REPLACE_OBJECTS": "1",
            "GIT_PROTOCOL_FROM_USER": "0",
            "GIT_CONFIG_COUNT": str(len(SAFE_CONFIG)),
        }
    )
    for n, (key, value) in enumerate(SAFE_CONFIG):
        env[f"GIT_CONFIG_KEY_{n}"] = key
        env[f"GIT_CONFIG_VALUE_{n}"] = value
    return env


def run_git(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    check: bool = True,
    what: str | None = None,
    input: bytes = b"",
) -> Completed:
    """``git --no-pager ARGS`` with :func:`git_env` (stdin empty unless ``input``)."""
    git = require("git")
    return run(
        [git, "--no-pager", *args],
        cwd=cwd,
        env=git_env(),
        check=check,
        input=input,
        timeout=GIT_TIMEOUT,
        what=what or f"git {args[0] if args else ''}",
    )


# --- reading small metadata files without trusting them ----------------------------


def _read_small(path: Path, limit: int = _SMALL) -> str | None:
    """The text of a small regular file, or None (missing, not regular, too large)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, limit + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) > limit:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _valid_refname(name: str) -> bool:
    if not name.startswith("refs/") or name.endswith((".lock", "/")):
        return False
    if any(ord(c) < 0x20 or c in "\\\x7f ~^:?*[" for c in name):
        return False
    return all(part and not part.startswith(".") for part in name.split("/"))


def _packed_ref(common: Path, name: str) -> str | None:
    try:
        fd = os.open(common / "packed-refs", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        want = name.encode()
        for raw in fh:
            line = raw.rstrip(b"\n")
            if line.startswith((b"#", b"^")):
                continue
            oid, _, ref = line.partition(b" ")
            if ref == want:
                text = oid.decode("ascii", "replace")
                return text if _OID.match(text) else None
    return None


def _resolve_head(gitdir: Path, common: Path) -> str | None:
    """The commit id ``HEAD`` names, following at most five symbolic refs; no git run."""
    text = _read_small(gitdir / "HEAD")
    for _ in range(5):
        if text is None:
            return None
        text = text.strip()
        if _OID.match(text):
            return text
        if not text.startswith("ref:"):
            return None
        name = text[4:].strip()
        if not _valid_refname(name):
            return None
        loose = _read_small(common / name)
        if loose is None:
            return _packed_ref(common, name)
        text = loose
    return None


@dataclass(frozen=True)
class Checkout:
    """A git work tree, located and its ``HEAD`` resolved without running git."""

    top: Path  # the work tree's top directory
    gitdir: Path
    common: Path  # where objects and refs live (differs for ``git worktree`` checkouts)
    head: str  # the full commit id HEAD names

    @property
    def objects(self) -> Path:
        return self.common / "objects"


def _gitdir_of(top: Path) -> Path | None:
    dotgit = top / ".git"
    try:
        st = os.lstat(dotgit)
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode):
        return dotgit.resolve() if dotgit.is_dir() else None
    text = _read_small(dotgit)
    if text is None or not text.startswith("gitdir:"):
        return None
    target = Path(text[len("gitdir:") :].strip())
    return (top / target).resolve()


def _common_of(gitdir: Path) -> Path:
    text = _read_small(gitdir / "commondir")
    if text is None or not text.strip():
        return gitdir
    return (gitdir / text.strip()).resolve()


def find_checkout(root: Path) -> Checkout | None:
    """The git checkout holding ``root`` (its top may be ``root`` or a parent), or None.

    None when there is no ``.git`` above ``root``, or when its ``HEAD`` does not name
    a commit (unborn branch, unreadable or malformed metadata).
    """
    root = Path(root).resolve()
    for top in (root, *root.parents):
        if os.path.lexists(top / ".git"):
            break
    else:
        return None
    gitdir = _gitdir_of(top)
    if gitdir is None:
        return None
    common = _common_of(gitdir)
    head = _resolve_head(gitdir, common)
    if head is None or not (common / "objects").is_dir():
        return None
    return Checkout(top=top, gitdir=gitdir, common=common, head=head)


def _bare_or_checkout(path: Path) -> Path | None:
    """The objects directory of the repository at ``path`` (a work tree or bare), or None."""
    path = path.resolve()
    gitdir = _gitdir_of(path)
    if gitdir is None and (path / "objects").is_dir() and (path / "HEAD").is_file():
        gitdir = path  # a bare repository
    if gitdir is None:
        return None
    objects = _common_of(gitdir) / "objects"
    return objects if objects.is_dir() else None


def _private_gitdir(where: Path, objects: Path, head: str | None) -> Path:
    """A git directory of our own that borrows ``objects`` read-only (alternates)."""
    if "\n" in str(objects) or not objects.is_absolute():
        raise InvalidInput(f"{objects}: unusable git object directory path")
    gitdir = where / "git"
    (gitdir / "refs" / "heads").mkdir(parents=True)
    (gitdir / "refs" / "tags").mkdir()
    (gitdir / "objects" / "info").mkdir(parents=True)
    (gitdir / "objects" / "info" / "alternates").write_text(f"{objects}\n")
    sha256 = head is not None and len(head) == 64
    config = f"[core]\n\trepositoryformatversion = {1 if sha256 else 0}\n\tbare = false\n"
    if sha256:
        config += "[extensions]\n\tobjectFormat = sha256\n"
    (gitdir / "config").write_text(config)
    (gitdir / "HEAD").write_text(f"{head}\n" if head else "ref: refs/heads/main\n")
    return gitdir


class Reader:
    """git commands on a checkout, run against a private git directory (see module doc)."""

    def __init__(self, checkout: Checkout, gitdir: Path) -> None:
        self.checkout = checkout
        self._gitdir = gitdir

    def run(
        self, *args: str, cwd: Path | None = None, check: bool = True, what: str | None = None
    ) -> Completed:
        return run_git(
            [f"--git-dir={self._gitdir}", f"--work-tree={self.checkout.top}", *args],
            cwd=cwd or self.checkout.top,
            check=check,
            what=what,
        )


@contextlib.contextmanager
def reading(checkout: Checkout) -> Iterator[Reader]:
    """A :class:`Reader` for ``checkout``; its private git directory is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="enclave-audit-git-") as tmp:
        gitdir = _private_gitdir(Path(tmp), checkout.objects, checkout.head)
        reader = Reader(checkout, gitdir)
        # a fresh index from HEAD: nothing of the repository's own index is trusted
        reader.run("read-tree", checkout.head, what="git read-tree HEAD")
        yield reader


# --- fetching one exact commit --------------------------------------------------------


def check_url(url: str) -> str:
    """Refuse what git would take as an option or a command-running transport."""
    if not url or url != url.strip():
        raise InvalidInput(f"--git {url!r}: empty URL or surrounding whitespace")
    if url.startswith("-"):
        raise InvalidInput(f"--git {url!r}: a repository URL must not start with '-'")
    if any(ord(c) < 0x20 or c == "\x7f" for c in url):
        raise InvalidInput(f"--git {url!r}: control characters in the repository URL")
    if "::" in url.split("/", 1)[0] or url.startswith("ext::") or url.startswith("fd::"):
        raise InvalidInput(f"--git {url!r}: transport helpers (<transport>::) are refused")
    if "://" in url:
        scheme, _, rest = url.partition("://")
        if scheme.lower() not in ("https", "http", "ssh", "git", "file"):
            raise InvalidInput(f"--git {url!r}: unsupported scheme {scheme.lower()!r}")
        authority = rest.split("/", 1)[0]
        host = authority.rpartition("@")[2]
        if authority.startswith("-") or host.startswith("-") or host.startswith("[-"):
            raise InvalidInput(f"--git {url!r}: a user or host name must not start with '-'")
    elif _local_path(url) is None and url.split(":", 1)[0].rpartition("@")[2].startswith("-"):
        raise InvalidInput(f"--git {url!r}: a host name must not start with '-'")
    return url


def _local_path(url: str) -> Path | None:
    """The filesystem path a URL names, or None for a remote one (scp-like or scheme)."""
    if url.startswith("file://"):
        return Path(unquote(urlsplit(url).path))
    if "://" in url:
        return None
    colon, slash = url.find(":"), url.find("/")
    if colon > 0 and (slash < 0 or colon < slash):
        return None  # [user@]host:path is ssh
    return Path(url)


def resolve_commit(repo: Path, prefix: str) -> str:
    """The one commit object whose id starts with ``prefix`` (refs are never consulted)."""
    prefix = prefix.lower()
    if not _PREFIX.match(prefix):
        raise InvalidInput(f"{prefix!r} is not a commit id (4 to 64 hex digits)")
    done = run_git(
        ["-C", str(repo), "rev-parse", f"--disambiguate={prefix}"],
        check=False,
        what="git rev-parse --disambiguate",
    )
    candidates = [c for c in done.stdout.decode("ascii", "replace").split() if _OID.match(c)]
    if not candidates:
        return ""
    types = run_git(
        ["-C", str(repo), "cat-file", "--batch-check=%(objectname) %(objecttype)"],
        input="".join(f"{c}\n" for c in candidates).encode(),
        what="git cat-file --batch-check",
    )
    commits = [
        line.split()[0]
        for line in types.stdout.decode("ascii", "replace").splitlines()
        if line.endswith(" commit")
    ]
    if len(commits) > 1:
        raise InvalidInput(
            f"commit id {prefix} is ambiguous ({len(commits)} commits start with it);"
            " give more digits"
        )
    return commits[0] if commits else ""


def fetch_commit(url: str, prefix: str, dest: Path) -> str:
    """Check out the commit ``prefix`` of ``url`` into ``dest`` (new); returns its full id.

    ``prefix`` is resolved among commit objects only.  A local repository's objects are
    borrowed through alternates (its config, hooks and index are never read, no
    transport runs in it); a remote one is cloned with ``--`` before the URL.
    """
    check_url(url)
    local = _local_path(url)
    if local is not None:
        objects = _bare_or_checkout(local)
        if objects is None:
            raise InvalidInput(f"--git {url!r}: not a git repository")
        run_git(["init", "--quiet", "--template=", "--", str(dest)], what="git init")
        (dest / ".git" / "objects" / "info").mkdir(parents=True, exist_ok=True)
        if "\n" in str(objects):
            raise InvalidInput(f"--git {url!r}: unusable repository path")
        (dest / ".git" / "objects" / "info" / "alternates").write_text(f"{objects}\n")
    else:
        run_git(
            ["clone", "--quiet", "--no-checkout", "--template=", "--", url, str(dest)],
            what="git clone",
        )
    commit = resolve_commit(dest, prefix)
    if not commit and local is None and _OID.match(prefix.lower()):
        # not reachable from a branch or tag: ask for the object itself
        run_git(
            ["-C", str(dest), "fetch", "--quiet", "--no-tags", "origin", "--", prefix.lower()],
            check=False,
            what="git fetch",
        )
        commit = resolve_commit(dest, prefix)
    if not commit:
        raise InvalidInput(f"--git {url!r}: no commit {prefix} in the repository")
    run_git(
        ["-C", str(dest), "checkout", "--quiet", "--detach", commit, "--"],
        what=f"git checkout {commit}",
    )
    head = run_git(["-C", str(dest), "rev-parse", "--verify", "HEAD^{commit}"])
    got = head.stdout.decode("ascii", "replace").strip()
    if got != commit:
        raise BuildStepFailed(f"git checkout of {commit} left HEAD at {got}")
    return commit


# --- comparing files with a commit --------------------------------------------------


def blob_id(path: Path, *, sha256: bool = False) -> tuple[str, str]:
    """(git mode, git blob id) of a file as it is on disk (a symlink as its target)."""
    st = os.lstat(path)
    h = hashlib.sha256() if sha256 else hashlib.sha1()  # noqa: S324 - git's object id
    if stat.S_ISLNK(st.st_mode):
        data = os.fsencode(os.readlink(path))
        h.update(b"blob %d\0" % len(data) + data)
        return "120000", h.hexdigest()
    if not stat.S_ISREG(st.st_mode):
        return "", ""
    h.update(b"blob %d\0" % st.st_size)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return ("100755" if st.st_mode & stat.S_IXUSR else "100644"), h.hexdigest()


def differing(checkout: Checkout, files: Sequence[Path]) -> list[str]:
    """The ``files`` (paths in the work tree) whose bytes or mode are not ``HEAD``'s.

    Compared byte for byte through git blob ids, independently of any index, so an
    uncommitted, untracked or ignored file the build reads is found whatever the
    repository's own metadata says.  A file outside the work tree counts as differing.
    """
    with reading(checkout) as git:
        done = git.run("ls-tree", "-r", "-z", "--full-tree", checkout.head, what="git ls-tree")
    tree: dict[str, tuple[str, str]] = {}
    for record in done.stdout.split(b"\0"):
        if not record:
            continue
        meta, _, name = record.partition(b"\t")
        mode, _kind, oid = meta.decode("ascii", "replace").split(" ")
        tree[os.fsdecode(name)] = (mode, oid)
    sha256 = len(checkout.head) == 64
    out: list[str] = []
    for path in sorted(set(files)):
        try:
            rel = Path(path).relative_to(checkout.top).as_posix()
        except ValueError:
            out.append(str(path))
            continue
        if tree.get(rel) != blob_id(path, sha256=sha256):
            out.append(rel)
    return out
