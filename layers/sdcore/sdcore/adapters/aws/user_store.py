"""Users, API keys and rate counters in DynamoDB (one table, typed partition keys)."""

from __future__ import annotations

import builtins
import math
from typing import Any

from botocore.exceptions import ClientError

from sdcore.adapters.aws.codec import (
    Codec,
    error_code,
    scan,
    update_expression,
)
from sdcore.domain.models import (
    ApiKey,
    User,
    UserChanges,
)
from sdcore.errors import ConflictError, NotFoundError
from sdcore.ports import UserStore


class DynamoDBUserStore(UserStore):
    """Users, their API keys and rate counters in one table keyed by the string `pk`:

    - ``user#<name>``: the User fields (camelCase), plus ``keyHashes``, a string set of the
      sha256 of every key of the user (absent until the first key). It is how list_keys and
      revoke_keys find the keys with consistent reads and no index: a GSI on the key items
      would be eventually consistent, and a revocation must not miss a key created a moment ago.
    - ``key#<sha256>``: the ApiKey fields; find_key is one consistent GetItem.
    - ``rate#<counter>``: ``value`` (a number kept by atomic ADD) and ``expiresAt``, the table's
      TTL attribute (DynamoDB deletes the item some time after it passes).

    `put_key` writes the key item and adds its hash to the user's set in one transaction, on
    the condition that the user exists (NotFoundError otherwise).
    """

    users: Codec[User] = Codec(User, "name")
    keys: Codec[ApiKey] = Codec(ApiKey, "key_hash")

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    @staticmethod
    def _pk(kind: str, value: str) -> dict[str, Any]:
        return {"pk": {"S": f"{kind}#{value}"}}

    def create(self, user: User) -> None:
        try:
            self.client.put_item(
                TableName=self.table,
                Item={**self._pk("user", user.name), **self.users.item(user)},
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as e:
            if error_code(e) == "ConditionalCheckFailedException":
                raise ConflictError(f"user {user.name} exists") from None
            raise

    def _get_user_item(self, name: str) -> dict[str, Any] | None:
        resp = self.client.get_item(
            TableName=self.table, Key=self._pk("user", name), ConsistentRead=True
        )
        return resp.get("Item")

    def get(self, name: str) -> User:
        item = self._get_user_item(name)
        if item is None:
            raise NotFoundError(f"user {name} not found")
        return self.users.record(item)

    def list(self) -> list[User]:
        # A scan, filtered to user items: admin listings are rare; keys and counters are skipped.
        items = scan(
            self.client,
            TableName=self.table,
            ConsistentRead=True,
            FilterExpression="begins_with(pk, :user)",
            ExpressionAttributeValues={":user": {"S": "user#"}},
        )
        return sorted((self.users.record(i) for i in items), key=lambda u: u.name)

    def update(self, name: str, changes: UserChanges) -> User:
        fields = changes.fields()
        if not fields:
            return self.get(name)
        expression, names, values = update_expression(self.users.fields(fields))
        kwargs: dict[str, Any] = {"ExpressionAttributeValues": values} if values else {}
        try:
            resp = self.client.update_item(
                TableName=self.table,
                Key=self._pk("user", name),
                UpdateExpression=expression,
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames=names,
                ReturnValues="ALL_NEW",
                **kwargs,
            )
        except ClientError as e:
            if error_code(e) == "ConditionalCheckFailedException":
                raise NotFoundError(f"user {name} not found") from None
            raise
        return self.users.record(resp["Attributes"])

    def put_key(self, key: ApiKey) -> None:
        try:
            self.client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self.table,
                            "Item": {**self._pk("key", key.key_hash), **self.keys.item(key)},
                        }
                    },
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": self._pk("user", key.user),
                            "UpdateExpression": "ADD keyHashes :h",
                            "ConditionExpression": "attribute_exists(pk)",
                            "ExpressionAttributeValues": {":h": {"SS": [key.key_hash]}},
                        }
                    },
                ]
            )
        except ClientError as e:
            reasons = e.response.get("CancellationReasons") or []
            if len(reasons) > 1 and reasons[1].get("Code") == "ConditionalCheckFailed":
                raise NotFoundError(f"user {key.user} not found") from None
            raise

    def find_key(self, key_hash: str) -> ApiKey | None:
        resp = self.client.get_item(
            TableName=self.table, Key=self._pk("key", key_hash), ConsistentRead=True
        )
        return self.keys.record(resp["Item"]) if "Item" in resp else None

    # builtins.list: in this class `list` is the method
    def _key_hashes(self, user: str) -> builtins.list[str]:
        item = self._get_user_item(user)
        return sorted(item.get("keyHashes", {}).get("SS", [])) if item else []

    def list_keys(self, user: str) -> builtins.list[ApiKey]:
        hashes = self._key_hashes(user)
        found: builtins.list[ApiKey] = []
        for start in range(0, len(hashes), 100):
            request: Any = {
                self.table: {
                    "Keys": [self._pk("key", h) for h in hashes[start : start + 100]],
                    "ConsistentRead": True,
                }
            }
            while request:
                resp = self.client.batch_get_item(RequestItems=request)
                items = resp.get("Responses", {}).get(self.table, [])
                found += [self.keys.record(i) for i in items]
                request = resp.get("UnprocessedKeys") or None
        mine = [k for k in found if k.user == user]  # a key re-put under another user is theirs
        return sorted(mine, key=lambda k: (k.created_at, k.key_hash))

    def revoke_keys(self, user: str) -> int:
        revoked = 0
        for key_hash in self._key_hashes(user):
            try:
                # Conditional per key: two concurrent revocations count each key once.
                self.client.update_item(
                    TableName=self.table,
                    Key=self._pk("key", key_hash),
                    UpdateExpression="SET revoked = :yes",
                    ConditionExpression="attribute_exists(pk) AND #u = :u AND revoked = :no",
                    ExpressionAttributeNames={"#u": "user"},
                    ExpressionAttributeValues={
                        ":yes": {"BOOL": True},
                        ":no": {"BOOL": False},
                        ":u": {"S": user},
                    },
                )
            except ClientError as e:
                if error_code(e) != "ConditionalCheckFailedException":
                    raise
                continue
            revoked += 1
        return revoked

    def hit(self, counter: str, expires_at: float) -> int:
        resp = self.client.update_item(
            TableName=self.table,
            Key=self._pk("rate", counter),
            # expiresAt is set by the first hit only, like the local store (TTL takes whole seconds)
            UpdateExpression="ADD #v :one SET expiresAt = if_not_exists(expiresAt, :e)",
            ExpressionAttributeNames={"#v": "value"},
            ExpressionAttributeValues={
                ":one": {"N": "1"},
                ":e": {"N": str(math.ceil(expires_at))},
            },
            ReturnValues="UPDATED_NEW",
        )
        return int(resp["Attributes"]["value"]["N"])

    def peek(self, counter: str) -> int:
        item = self.client.get_item(TableName=self.table, Key=self._pk("rate", counter)).get("Item")
        return int(item["value"]["N"]) if item else 0
