"""The KMS operations: AWS JSON 1.1 request members in, response members out.

Each operation checks its parameters as AWS does (``ValidationException``), resolves
the key (``NotFoundException``), evaluates the key policy for the authenticated
caller (``AccessDeniedException`` with AWS's wording) and only then touches key
material.  ``Decrypt``, ``GenerateDataKey`` and ``GenerateRandom`` accept a
``Recipient``: the attestation document is verified first, its PCRs become the
``kms:RecipientAttestation:*`` condition keys, and the plaintext is returned only as
``CiphertextForRecipient`` (CMS EnvelopedData to the document's public key).

Account-level actions that AWS authorizes with IAM policies rather than key policies
(``CreateKey``, ``ListKeys``, ``GenerateRandom``) are allowed to every authenticated
caller of the KMS's own account and refused to others.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from enclave_runtime.cms import build_enveloped_data
from reference_enclave.kms import blob
from reference_enclave.kms.config import Credential, KmsConfig
from reference_enclave.kms.errors import (
    KmsApiError,
    access_denied,
    malformed_policy,
    not_found,
    validation,
)
from reference_enclave.kms.policy import (
    Decision,
    RequestContext,
    condition_keys,
    default_policy,
    evaluate,
    parse_policy,
)
from reference_enclave.kms.recipient import RecipientVerifier, VerifiedRecipient
from reference_enclave.kms.store import KeyRecord, KeyStore

SYMMETRIC = "SYMMETRIC_DEFAULT"
MAX_PLAINTEXT = 4096
MAX_DESCRIPTION = 8192
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_KEY_ARN_RE = re.compile(r"^arn:aws:kms:([a-z0-9-]+):(\d{12}):key/(.+)$")
_ALIAS_ARN_RE = re.compile(r"^arn:aws:kms:([a-z0-9-]+):(\d{12}):(alias/.+)$")
#: AWS: alias/ then 1-250 of these characters; alias/aws/ is reserved for AWS managed keys
_ALIAS_NAME_RE = re.compile(r"^alias/[a-zA-Z0-9/_-]{1,250}$")
DAY_SECONDS = 86400
_DATA_KEY_SPECS = {"AES_256": 32, "AES_128": 16}


@dataclass
class AuditNote:
    """What one call leaves in the audit log besides its name and outcome."""

    key_arn: str | None = None
    recipient: dict[str, str] = field(default_factory=dict)


Handler = Callable[[dict[str, Any], Credential, AuditNote], dict[str, Any]]


# --- parameter helpers ---------------------------------------------------------------


def _null(name: str) -> KmsApiError:
    return validation(
        f"1 validation error detected: Value null at '{name}' failed to satisfy constraint: "
        "Member must not be null"
    )


def _string(
    params: dict[str, Any], name: str, *, required: bool = False, limit: int = 2048
) -> str | None:
    value = params.get(name)
    if value is None:
        if required:
            raise _null(name)
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= limit:
        raise validation(f"{name} must be a string of 1 to {limit} characters")
    return value


def _blob_param(params: dict[str, Any], name: str, *, required: bool, limit: int) -> bytes | None:
    value = params.get(name)
    if value is None:
        if required:
            raise _null(name)
        return None
    if not isinstance(value, str):
        raise validation(f"{name} must be base64 text")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise validation(f"{name} is not valid base64") from None
    if not 1 <= len(raw) <= limit:
        raise validation(
            f"1 validation error detected: Value at '{name}' failed to satisfy constraint: "
            f"Member must have length between 1 and {limit}"
        )
    return raw


RowT = TypeVar("RowT", bound=tuple[Any, ...])


def _paginate(rows: Sequence[RowT], limit: int) -> tuple[Sequence[RowT], dict[str, Any]]:
    """A List* page: ``rows`` was read with ``limit + 1`` to learn whether more follow.

    The page's rows, and the response's ``Truncated`` (and ``NextMarker``: the first
    column of the page's last row) that every List* operation carries.
    """
    page = rows[:limit]
    out: dict[str, Any] = {"Truncated": len(rows) > limit}
    if len(rows) > limit:
        out["NextMarker"] = page[-1][0]
    return page, out


def _int(params: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        shown: object = value
        if isinstance(value, int) and abs(value) >= 10**20:
            shown = "(out of range)"  # never print an arbitrarily long integer
        elif not isinstance(value, int | float | str):
            shown = type(value).__name__
        raise validation(
            f"1 validation error detected: Value '{shown}' at '{name}' failed to satisfy "
            f"constraint: Member must have value between {low} and {high}"
        )
    return value


def _bool(params: dict[str, Any], name: str) -> bool:
    value = params.get(name, False)
    if not isinstance(value, bool):
        raise validation(f"{name} must be a boolean")
    return value


def _context(params: dict[str, Any]) -> dict[str, str]:
    value = params.get("EncryptionContext")
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in value.items()
    ):
        raise validation("EncryptionContext must map non-empty strings to strings")
    return dict(value)


def _symmetric(params: dict[str, Any]) -> None:
    algorithm = params.get("EncryptionAlgorithm")
    if algorithm is not None and algorithm != SYMMETRIC:
        raise KmsApiError(
            "InvalidKeyUsageException",
            f"{algorithm} is not a valid encryption algorithm for a symmetric key",
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- the service -----------------------------------------------------------------------


class KmsService:
    def __init__(
        self,
        store: KeyStore,
        config: KmsConfig,
        recipients: RecipientVerifier,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config
        self.recipients = recipients
        self.clock = clock
        self.operations: dict[str, Handler] = {
            "CreateKey": self.create_key,
            "DescribeKey": self.describe_key,
            "ListKeys": self.list_keys,
            "Encrypt": self.encrypt,
            "Decrypt": self.decrypt,
            "GenerateDataKey": self.generate_data_key,
            "GenerateDataKeyWithoutPlaintext": self.generate_data_key_without_plaintext,
            "GenerateRandom": self.generate_random,
            "GetKeyPolicy": self.get_key_policy,
            "PutKeyPolicy": self.put_key_policy,
            "CreateAlias": self.create_alias,
            "ListAliases": self.list_aliases,
            "DeleteAlias": self.delete_alias,
            "ScheduleKeyDeletion": self.schedule_key_deletion,
        }

    def call(
        self, operation: str, params: dict[str, Any], caller: Credential, note: AuditNote
    ) -> dict[str, Any]:
        handler = self.operations.get(operation)
        if handler is None:
            raise KmsApiError(
                "UnknownOperationException", f"Operation {operation} is not supported by this KMS"
            )
        return handler(params, caller, note)

    # --- keys and policies ------------------------------------------------------------

    def _arn(self, key_id: str) -> str:
        return f"arn:aws:kms:{self.config.region}:{self.config.account_id}:key/{key_id}"

    def _alias_arn(self, name: str) -> str:
        return f"arn:aws:kms:{self.config.region}:{self.config.account_id}:{name}"

    def _resolve(self, ref: str, *, allow_pending: bool = False) -> KeyRecord:
        """A key by id, key ARN, alias name or alias ARN; usable unless ``allow_pending``."""
        if ref.startswith("alias/") or ":alias/" in ref:
            name = ref
            match_alias = _ALIAS_ARN_RE.match(ref)
            if match_alias is not None:
                region, account, name = match_alias.groups()
                if region != self.config.region or account != self.config.account_id:
                    raise not_found(f"Alias {self._alias_arn(name)} is not found.")
            target = self.store.alias(name)
            if target is None:
                raise not_found(f"Alias {self._alias_arn(name)} is not found.")
            ref = target[0]
        key_id = ref
        match = _KEY_ARN_RE.match(ref)
        if match is not None:
            region, account, key_id = match.groups()
            if region != self.config.region or account != self.config.account_id:
                raise not_found(f"Key '{ref}' does not exist")
        if not _UUID_RE.match(key_id):
            raise not_found(f"Invalid keyId '{ref}'")
        record = self.store.get(key_id)
        if record is None:
            raise not_found(f"Key '{self._arn(key_id)}' does not exist")
        if not record.enabled:
            raise KmsApiError("DisabledException", f"{record.arn} is disabled.")
        if not allow_pending and self.store.deletion_date(record.key_id) is not None:
            raise KmsApiError("KMSInvalidStateException", f"{record.arn} is pending deletion.")
        return record

    def _require_own_account(self, caller: Credential, action: str) -> None:
        if caller.account != self.config.account_id:
            raise access_denied(
                f"User: {caller.principal} is not authorized to perform: {action} on resource: *"
            )

    def _authorize(
        self,
        record: KeyRecord,
        action: str,
        caller: Credential,
        *,
        encryption_context: dict[str, str] | None = None,
        recipient: VerifiedRecipient | None = None,
        policy_text: str | None = None,
    ) -> None:
        try:
            policy = parse_policy(policy_text if policy_text is not None else record.policy)
        except KmsApiError:
            raise KmsApiError(
                "KMSInternalException",
                f"the stored policy of {record.arn} is unreadable",
                status=500,
            ) from None
        ctx = RequestContext(
            principal=caller.principal,
            account=caller.account,
            action=action,
            resource=record.arn,
            keys=condition_keys(
                principal=caller.principal,
                account=caller.account,
                encryption_context=encryption_context,
                attestation_pcrs=recipient.pcrs if recipient is not None else None,
                now=self.clock(),
            ),
        )
        result = evaluate(policy, ctx)
        if result.decision is Decision.ALLOW:
            return
        prefix = (
            f"User: {caller.principal} is not authorized to perform: {action} "
            f"on resource: {record.arn}"
        )
        if result.decision is Decision.EXPLICIT_DENY:
            raise access_denied(f"{prefix} with an explicit deny in a resource-based policy")
        raise access_denied(f"{prefix} because no resource-based policy allows the {action} action")

    def _lockout_check(
        self, record: KeyRecord, policy_text: str, caller: Credential, bypass: bool
    ) -> None:
        if bypass:
            return
        try:
            self._authorize(record, "kms:PutKeyPolicy", caller, policy_text=policy_text)
        except KmsApiError:
            raise malformed_policy(
                "The new key policy will not allow you to update the key policy in the future."
            ) from None

    def _metadata(self, record: KeyRecord) -> dict[str, Any]:
        deletion = self.store.deletion_date(record.key_id)
        pending = {"DeletionDate": deletion} if deletion is not None else {}
        state = "PendingDeletion" if deletion is not None else None
        return pending | {
            "AWSAccountId": record.account,
            "KeyId": record.key_id,
            "Arn": record.arn,
            "CreationDate": record.created,
            "Enabled": record.enabled and deletion is None,
            "Description": record.description,
            "KeyUsage": "ENCRYPT_DECRYPT",
            "KeyState": state or ("Enabled" if record.enabled else "Disabled"),
            "Origin": "AWS_KMS",
            "KeyManager": "CUSTOMER",
            "CustomerMasterKeySpec": SYMMETRIC,
            "KeySpec": SYMMETRIC,
            "EncryptionAlgorithms": [SYMMETRIC],
            "MultiRegion": False,
        }

    def create_key(
        self, params: dict[str, Any], caller: Credential, note: AuditNote
    ) -> dict[str, Any]:
        self._require_own_account(caller, "kms:CreateKey")
        description = params.get("Description", "")
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
            raise validation(
                f"Description must be a string of at most {MAX_DESCRIPTION} characters"
            )
        for name, allowed in (
            ("KeyUsage", "ENCRYPT_DECRYPT"),
            ("KeySpec", SYMMETRIC),
            ("CustomerMasterKeySpec", SYMMETRIC),
            ("Origin", "AWS_KMS"),
        ):
            value = params.get(name)
            if value is not None and value != allowed:
                raise validation(f"{name} {value!r} is not supported by this KMS (only {allowed})")
        if _bool(params, "MultiRegion"):
            raise validation("MultiRegion keys are not supported by this KMS")
        tags = params.get("Tags", [])
        if not isinstance(tags, list):
            raise validation("Tags must be a list")
        policy_text = _string(params, "Policy", limit=32768) or default_policy(
            self.config.account_id
        )
        parse_policy(policy_text)
        key_id = str(uuid.uuid4())
        record = KeyRecord(
            key_id=key_id,
            arn=self._arn(key_id),
            account=self.config.account_id,
            region=self.config.region,
            created=round(self.clock(), 3),
            description=description,
            enabled=True,
            material=os.urandom(32),
            policy=policy_text,
        )
        self._lockout_check(
            record, policy_text, caller, _bool(params, "BypassPolicyLockoutSafetyCheck")
        )
        self.store.create_key(record)
        note.key_arn = record.arn
        return {"KeyMetadata": self._metadata(record)}

    def describe_key(
        self, params: dict[str, Any], caller: Credential, note: AuditNote
    ) -> dict[str, Any]:
        record = self._resolve(str(_string(params, "KeyId", required=True)), allow_pending=True)
        note.key_arn = record.arn
        self._authorize(record, "kms:DescribeKey", caller)
        return {"KeyMetadata": self._metadata(record)}

    def list_keys(
        self, params: dict[str, Any], caller: Credential, note: AuditNote
    ) -> dict[str, Any]:
        self._require_own_account(caller, "kms:ListKeys")
        limit = _int(params, "Limit", 1, 1000) or 100
        marker = _string(params, "Marker", limit=1024)
        if marker is not None and not _UUID_RE.match(marker):
            raise KmsApiError("InvalidMarkerException", "The Marker is not valid")
        rows = self.store.list_ids(after=marker, limit=limit + 1)
        page, out = _paginate(rows, limit)
        out["Keys"] = [{"KeyId": key_id, "KeyArn": arn} for key_id, arn in page]
        return out

    def get_key_policy(
        self, params: dict[str, Any], caller: Credential, note: AuditNote
    ) -> dict[str, Any]:
        record = self._resolve(str(_string(params, "KeyId", required=True)), allow_pending=True)
        note.key_arn = record.arn
        name = params.get("PolicyName", "default")
        if name != "default":
            raise not_found(f"Policy {name!r} does not exist; the only policy name is 'default'")
        self._authorize(record, "kms:GetKeyPolicy", caller)
        return {"Policy": record.policy, "PolicyName": "default"}

    def put_key_policy(
        self, params: dict[str, Any], caller: Credential, note: AuditNote
    ) -> dict[str, Any]:
        record = self._resolve(str(_string(params, "KeyId", required=True)))
        note.key_arn = record.arn
        name = params.get("PolicyName", "default")
        if name != "default":
            raise validation("PolicyName must be 'default'")
        policy_text = str(_string(params, "Policy", required=True, limit=32768))
        self._authorize(record, "kms:PutKeyPolicy", caller)
        parse_policy(policy_text)
        self._lockout_check(
            record, policy_text, caller, _bool(params, "BypassPolicyLockoutSafetyCheck")
        )
        self.store.set_policy(record.key_id, policy_text)
        return {}

    # --- aliases and key deletion -------------------------------------------------------

    def _alias_name(self, params: dict[str, Any]) -> str:
        name = str(_string(params, "AliasName", required=True, limit=256))
        if not _ALIAS_NAME_RE.match(name):
            raise validation(
                f"1 validation error detected: Value '{name[:256]}' at 'aliasName' failed to"
                " satisfy constraint: Member must satisfy regular expression pattern:"
                " ^alias/[a-zA-Z0-9/_-]+$"
            )
        return name

    def create_alias(
        self, params: dict[str, Any], caller: Credential, note: AuditNote
    ) -> dict[str, Any]:
        name = self._alias_name(params)
        if name.startswith("alias/aws/"):
            raise not_found("Cannot create alias with prefix 'alias/aws/'")
        target = str(_string(params, "TargetKeyId", required=True))
        if target.startswith("alias/") or ":alias/" in target:
            raise validation("TargetKeyId must be a key id or key ARN, not an alias")
        record = self._resolve(target)
        note.key_arn = record.arn
        self._authorize(record, "kms:CreateAlias", caller)
        if not self.store.create_alias(name, record.key_id, self.clock()):
            raise KmsApiError(
                "AlreadyExistsException",
                f"An alias with the name {self._alias_arn(name)} already exists",
            )
        return {}

    def delete_alias(
        self, params: dict[str, Any], caller: Credential, note: AuditNote
    ) -> dict[str, Any]:
        name = self._alias_name(params)
        target = self.store.alias(name)
        if target is None:
            raise not_found(f"Alias {self._alias_arn(name)} is not found.")
        record = self.store.get(target[0])
        if record is not None:
            note.key_arn = record.arn
            self._authorize(record, "kms:DeleteAlias", caller)
        self.store.delete_alias(name)
        return {}

    def list_aliases(
        self, params: dict[str, Any], caller: Credential, note: AuditNote
    ) -> dict[str, Any]:
        self._require_own_account(caller, "kms:ListAliases")
        limit = _int(params, "Limit", 1, 100) or 50
        marker = _string(params, "Marker", limit=320)
        if marker is not None and not _ALIAS_NAME_RE.match(marker):
            raise KmsApiError("InvalidMarkerException", "The Marker is not valid")
        key_ref = _string(params, "KeyId")
        key_id = None
        if key_ref is not None:
            key_id = self._resolve(key_ref, allow_pending=True).key_id
        rows = self.store.list_aliases(key_id=key_id, after=marker, limit=limit + 1)
        page, out = _paginate(rows, limit)
        out["Aliases"] = [
            {
                "AliasName": name,
                "AliasArn": self._alias_arn(name),
                "TargetKeyId": target,
                "CreationDate": created,
                "LastUpdatedDate": updated,
            }
            for name, target, created, updated in page
        ]
        return out

    def schedule_key_deletion(
        self, params: dict[str, Any], caller: Credential, note: AuditNote
    ) -> dict[str, Any]:
        record = self._resolve(str(_string(params, "KeyId", required=True)), allow_pending=True)
        note.key_arn = record.arn
        days = _int(params, "PendingWindowInDays", 7, 30) or 30
        self._authorize(record, "kms:ScheduleKeyDeletion", caller)
        current = self.store.deletion_date(record.key_id)
        if current is not None:
            raise KmsApiError("KMSInvalidStateException", f"{record.arn} is pending deletion.")
        deletion = float(int(self.clock()) + days * DAY_SECONDS)
        self.store.schedule_deletion(record.key_id, deletion)
        return {
            "KeyId": record.arn,
            "DeletionDate": deletion,
            "KeyState": "PendingDeletion",
            "PendingWindowInDays": days,
        }

    # --- cryptographic operations -----------------------------------------------------

    def _recipient(self, params: dict[str, Any], note: AuditNote) -> VerifiedRecipient | None:
        raw = params.get("Recipient")
        if raw is None:
            return None
        verified = self.recipients.verify(raw)
        note.recipient = {
            "attestationDocumentModuleId": verified.module_id,
            "attestationDocumentEnclaveImageDigest": verified.image_sha384,
        }
        return verified

    def encrypt(
        self, params: dict[str, Any], caller: Credential, note: AuditNote
    ) -> dict[str, Any]:
        record = self._resolve(str(_string(params, "KeyId", required=True)))
        note.key_arn = record.arn
        plaintext = _blob_param(params, "Plaintext", required=True, limit=MAX_PLAINTEXT)
        assert plaintext is not None
        context = _context(params)
        _symmetric(params)
        self._authorize(record, "kms:Encrypt", caller, encryption_context=context)
        sealed = blob.seal(record.key_id, record.material, plaintext, context)
        return {
            "CiphertextBlob": _b64(sealed),
            "KeyId": record.arn,
            "EncryptionAlgorithm": SYMMETRIC,
        }

    def decrypt(
        self, params: dict[str, Any], caller: Credential, note: AuditNote
    ) -> dict[str, Any]:
        ciphertext = _blob_param(params, "CiphertextBlob", required=True, limit=blob.MAX_BLOB)
        assert ciphertext is not None
        context = _context(params)
        _symmetric(params)
        header = blob.read_header(ciphertext)
        record = self._resolve(header.key_id)
        note.key_arn = record.arn
        wanted = _string(params, "KeyId")
        if wanted is not None and self._resolve(wanted).key_id != record.key_id:
            raise KmsApiError(
                "IncorrectKeyException",
                "The key ID in the request does not identify a CMK that can perform this "
                "operation.",
            )
        recipient = self._recipient(params, note)
        self._authorize(
            record, "kms:Decrypt", caller, encryption_context=context, recipient=recipient
        )
        plaintext = blob.open_blob(header, record.material, context)
        out = {"KeyId": record.arn, "EncryptionAlgorithm": SYMMETRIC}
        return out | _released(plaintext, recipient)

    def _data_key(
        self,
        params: dict[str, Any],
        caller: Credential,
        note: AuditNote,
        action: str,
        *,
        with_recipient: bool,
    ) -> tuple[KeyRecord, bytes, bytes, VerifiedRecipient | None]:
        record = self._resolve(str(_string(params, "KeyId", required=True)))
        note.key_arn = record.arn
        size = _int(params, "NumberOfBytes", 1, 1024)
        spec = params.get("KeySpec")
        if (size is None) == (spec is None):
            raise validation("Specify exactly one of KeySpec or NumberOfBytes")
        if spec is not None:
            if spec not in _DATA_KEY_SPECS:
                raise validation(
                    f"1 validation error detected: Value '{spec}' at 'keySpec' failed to satisfy "
                    "constraint: Member must satisfy enum value set: [AES_256, AES_128]"
                )
            size = _DATA_KEY_SPECS[spec]
        assert size is not None
        context = _context(params)
        recipient = self._recipient(params, note) if with_recipient else None
        self._authorize(record, action, caller, encryption_context=context, recipient=recipient)
        data_key = os.urandom(size)
        return (
            record,
            data_key,
            blob.seal(record.key_id, record.material, data_key, context),
            recipient,
        )

    def generate_data_key(
        self, params: dict[str, Any], caller: Credential, note: AuditNote
    ) -> dict[str, Any]:
        record, data_key, sealed, recipient = self._data_key(
            params, caller, note, "kms:GenerateDataKey", with_recipient=True
        )
        return {"CiphertextBlob": _b64(sealed), "KeyId": record.arn} | _released(
            data_key, recipient
        )

    def generate_data_key_without_plaintext(
        self, params: dict[str, Any], caller: Credential, note: AuditNote
    ) -> dict[str, Any]:
        if "Recipient" in params:
            raise validation("GenerateDataKeyWithoutPlaintext does not take a Recipient")
        record, _, sealed, _ = self._data_key(
            params, caller, note, "kms:GenerateDataKeyWithoutPlaintext", with_recipient=False
        )
        return {"CiphertextBlob": _b64(sealed), "KeyId": record.arn}

    def generate_random(
        self, params: dict[str, Any], caller: Credential, note: AuditNote
    ) -> dict[str, Any]:
        self._require_own_account(caller, "kms:GenerateRandom")
        if params.get("CustomKeyStoreId") is not None:
            raise KmsApiError(
                "CustomKeyStoreNotFoundException", "Custom key stores are not supported"
            )
        size = _int(params, "NumberOfBytes", 1, 1024)
        if size is None:
            raise validation("NumberOfBytes is required by this KMS")
        recipient = self._recipient(params, note)
        data = os.urandom(size)
        if recipient is not None:
            return {
                "CiphertextForRecipient": _b64(build_enveloped_data(data, recipient.public_key))
            }
        return {"Plaintext": _b64(data)}


def _released(secret: bytes, recipient: VerifiedRecipient | None) -> dict[str, str]:
    """How a secret leaves the KMS: sealed to an attested recipient, else in the clear."""
    if recipient is not None:
        return {"CiphertextForRecipient": _b64(build_enveloped_data(secret, recipient.public_key))}
    return {"Plaintext": _b64(secret)}
