"""Per-modality CKKS keys for horizontal (several stations per modality) weight averaging in HE mode.

Why a separate secret per group: the label holder's CKKS key decrypts fused *features*; if it
also decrypted averaged *weights*, it could read every branch. Averaging is only ever decrypted
by the stations that share the branch, so each horizontal group (the stations of one modality)
gets its own CKKS secret, generated offline by ``feddiff keys he-group`` and written only into
the members' party directories. The aggregator receives the matching *public* context: enough to
load and add ciphertexts, never to decrypt them. The label holder receives nothing.

Why each station pre-scales by ``samples_i / total``: FedAvg is then a plain sum, the only
operation the aggregator performs; no plaintext multiplication, relinearisation or Galois key is
needed, and the aggregator never learns more than ciphertext sizes.

Files (in the provisioning directory ``D``)::

    D/parties/<member>/he_group_<group>.ctx      secret CKKS context (0600), members only
    D/parties/<aggregator>/he_group_<group>.pub  public CKKS context (public key only)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import tenseal as ts

from crypto import he
from crypto.chain import keys_dir
from crypto.directory import load_directory
from crypto.keys import KeyMaterialError, check_name, check_secret_file, party_dir, write_public, write_secret

log = logging.getLogger(__name__)

SECRET_SUFFIX = ".ctx"
PUBLIC_SUFFIX = ".pub"
PREFIX = "he_group_"

Layout = list[tuple[str, tuple[int, ...], str]]  # (parameter name, shape, numpy dtype name)


# -- provisioning ---------------------------------------------------------------------------------
def secret_path(dir: Path, party: str, group: str) -> Path:
    """Where member ``party`` keeps the secret context of ``group``."""
    return party_dir(dir, party) / f"{PREFIX}{check_name('group', group)}{SECRET_SUFFIX}"


def public_path(dir: Path, aggregator: str, group: str) -> Path:
    """Where the aggregator keeps the public context of ``group``."""
    return party_dir(dir, aggregator) / f"{PREFIX}{check_name('group', group)}{PUBLIC_SUFFIX}"


def _secret_bytes(ctx: ts.Context) -> bytes:
    # public + secret key only: sums need no relinearisation or Galois keys, so none are written
    return ctx.serialize(save_public_key=True, save_secret_key=True, save_galois_keys=False, save_relin_keys=False)


def provision_group(dir: Path, group: str, members: Iterable[str]) -> str:
    """Generate one CKKS secret for ``group`` and write it to each member's party directory
    (0600), and its public context to the aggregator's. Returns the aggregator's name.

    Running it again rotates the group key for all members at once (they must all receive the
    new file); a station dropped from ``members`` keeps only a key nothing is encrypted to."""
    dir = Path(dir)
    check_name("group", group)
    names = list(dict.fromkeys(check_name("party", m) for m in members))
    if len(names) < 2:
        raise KeyMaterialError(f"HE group {group!r} needs at least two members, got {', '.join(names) or 'none'}")
    directory = load_directory(dir)
    for name in names:
        info = directory.get(name)
        if info is None:
            raise KeyMaterialError(f"party {name!r} is not in the directory of job {directory.job!r}: issue it first")
        if info.role != "edge":
            raise KeyMaterialError(f"party {name!r} has role {info.role!r}: only edge stations can be HE group members")
    agg = next((p.name for p in directory.parties.values() if p.role == "aggregator"), None)
    if agg is None:
        raise KeyMaterialError(f"job {directory.job!r} has no aggregator yet: issue it before 'he-group'")
    ctx = he.make_secret_context()
    secret = _secret_bytes(ctx)
    for name in names:
        write_secret(secret_path(dir, name, group), secret)
    write_public(public_path(dir, agg, group), he.public_bytes(ctx))
    log.info("HE group %s of job %s: secret for %s, public context for %s", group, directory.job, ", ".join(names), agg)
    return agg


def load_group_secret(dir: Path, party: str, group: str) -> ts.Context:
    """The secret context of ``group`` as held by member ``party``; one-line error if absent."""
    path = secret_path(dir, party, group)
    if not path.exists():
        raise KeyMaterialError(f"{path} missing: run 'feddiff keys he-group --dir {dir} --group {group} --members ...' including {party}")
    check_secret_file(path)
    try:
        ctx = ts.context_from(path.read_bytes())
    except Exception as e:  # noqa: BLE001 - TenSEAL raises assorted types on bad bytes
        raise KeyMaterialError(f"{path} is not a TenSEAL context: {type(e).__name__}") from None
    if not ctx.is_private():
        raise KeyMaterialError(f"{path} holds no secret key: re-run 'feddiff keys he-group' for group {group!r}")
    ctx.global_scale = he.GLOBAL_SCALE
    return ctx


def load_group_public(dir: Path, aggregator: str, group: str) -> ts.Context:
    """The aggregator's public context of ``group``; refuses one carrying a secret key."""
    path = public_path(dir, aggregator, group)
    if not path.exists():
        raise KeyMaterialError(f"{path} missing: run 'feddiff keys he-group --dir {dir} --group {group} --members ...'")
    return he.load_public(path.read_bytes())


# -- who needs which group key in a job ----------------------------------------------------------
def averaged_groups(clients: Mapping) -> dict[str, list[str]]:
    """Modality -> members, for the modalities held by two or more stations (those average)."""
    from feddiff.protocol.jobs import horizontal_groups

    return {m: cs for m, cs in horizontal_groups(dict(clients)).items() if len(cs) > 1}


def member_contexts(cfg, party: str) -> dict[str, ts.Context]:
    """Secret contexts of the horizontal groups ``party`` belongs to (empty if none)."""
    groups = [m for m, cs in averaged_groups(cfg.federation.clients).items() if party in cs]
    if not groups:
        return {}
    d = keys_dir(cfg)
    return {m: load_group_secret(d, party, m) for m in groups}


def aggregator_contexts(cfg, aggregator: str = "aggregator") -> dict[str, ts.Context]:
    """Public contexts of every horizontal group of the job, for summing only."""
    groups = averaged_groups(cfg.federation.clients)
    if not groups:
        return {}
    d = keys_dir(cfg)
    return {m: load_group_public(d, aggregator, m) for m in groups}


# -- the arithmetic -------------------------------------------------------------------------------
def layout_of(state: Mapping[str, np.ndarray]) -> Layout:
    """Names, shapes and dtypes of ``state`` in order: what ``unflatten`` needs to undo ``flatten``."""
    return [(k, tuple(int(s) for s in np.shape(v)), np.asarray(v).dtype.name) for k, v in state.items()]


def flatten(state: Mapping[str, np.ndarray]) -> tuple[np.ndarray, Layout]:
    """One float64 vector of all parameters (in ``state`` order) and the layout to undo it."""
    arrays = [np.asarray(v) for v in state.values()]
    flat = np.concatenate([a.astype(np.float64).reshape(-1) for a in arrays]) if arrays else np.zeros(0)
    return flat, layout_of(state)


def layout_size(layout: Layout) -> int:
    """Number of values a layout holds."""
    return int(sum(int(np.prod(shape)) for _, shape, _ in layout))


def unflatten(flat: np.ndarray, layout: Layout) -> dict[str, np.ndarray]:
    """Inverse of ``flatten``; integer parameters (counters) are rounded, since CKKS is approximate."""
    if flat.size != layout_size(layout):
        raise he.HEError(f"averaged vector holds {flat.size} values, the layout needs {layout_size(layout)}")
    out, off = {}, 0
    for name, shape, dtype in layout:
        n = int(np.prod(shape))
        part = flat[off : off + n].reshape(shape)
        off += n
        out[name] = (np.rint(part) if np.dtype(dtype).kind in "iub" else part).astype(dtype)
    return out


def encrypt_share(ctx: ts.Context, flat: np.ndarray, samples: int, total: int) -> list[bytes]:
    """This member's FedAvg share, ``flat * samples / total``, encrypted under the group key."""
    if total <= 0 or not 0 <= samples <= total:
        raise he.HEError(f"bad FedAvg weight {samples}/{total}")
    return he.encrypt_vector(ctx, np.asarray(flat, dtype=np.float64) * (samples / total))


def sum_shares(public_ctx: ts.Context, shares: list[list[bytes]]) -> list[bytes]:
    """The aggregator's whole part: add the members' encrypted shares (no key needed but public)."""
    return he.sum_vectors(public_ctx, shares)


def decrypt_average(secret_ctx: ts.Context, cts: list[bytes], layout: Layout) -> dict[str, np.ndarray]:
    """A member decrypts the summed shares, i.e. the FedAvg, back into named parameters."""
    return unflatten(he.decrypt_vector(secret_ctx, cts, n=layout_size(layout)), layout)
