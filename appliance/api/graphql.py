"""The slice of the Arweave gateway GraphQL API that AO clients need, over the node's own items.

aoconnect looks modules and processes up by id, and ao-scheduler-utils finds a scheduler's URL
through its ``Scheduler-Location`` record (by owner and ``Type`` tag); both are answered from the
items this node holds. Parsing and validation are graphql-core's (the reference implementation
of the GraphQL spec for Python), so malformed queries get standard GraphQL errors.
"""

from __future__ import annotations

import hashlib
from typing import Any

import graphql

from appliance.ao import items
from appliance.ao.encoding import b64url
from appliance.errors import BadRequest
from appliance.node.node import Node

MAX_FIRST = 100
MAX_QUERY_BYTES = 16 * 1024
MAX_TOKENS = 2000
"""Bounds the aliases and fields a query can name: the schema has no cycle, so with the token
bound the answer's size is bounded by lookups x MAX_FIRST x fields."""
MAX_LOOKUPS = 10
"""``transactions`` / ``transaction`` fields resolved per request (each is one store query)."""
MAX_FILTER_VALUES = 100
"""Entries of each list argument (``ids``, ``owners``, ``recipients``, ``tags``, ``values``)."""

SDL = """
type Query {
  transactions(ids: [ID!], owners: [String!], recipients: [String!], tags: [TagFilter!],
               first: Int = 10, after: String, sort: SortOrder = HEIGHT_DESC,
               block: BlockFilter, bundledIn: [ID!]): TransactionConnection!
  transaction(id: ID!): Transaction
  blocks(ids: [ID!], height: BlockFilter, first: Int = 10, after: String,
         sort: SortOrder = HEIGHT_DESC): BlockConnection!
}
type BlockConnection { pageInfo: PageInfo!, edges: [BlockEdge!]! }
type BlockEdge { cursor: String!, node: Block! }
input TagFilter { name: String!, values: [String!]!, op: TagOperator = EQ }
input BlockFilter { min: Int, max: Int }
enum TagOperator { EQ NEQ }
enum SortOrder { HEIGHT_ASC HEIGHT_DESC INGESTED_AT_ASC INGESTED_AT_DESC }
type TransactionConnection { pageInfo: PageInfo!, edges: [TransactionEdge!]! }
type PageInfo { hasNextPage: Boolean! }
type TransactionEdge { cursor: String!, node: Transaction! }
type Transaction {
  id: ID!, anchor: String!, signature: String!, recipient: String!, owner: Owner!,
  fee: Amount!, quantity: Amount!, data: MetaData!, tags: [Tag!]!, block: Block,
  bundledIn: Bundle, parent: Bundle
}
type Owner { address: String!, key: String! }
type Amount { winston: String!, ar: String! }
type MetaData { size: String!, type: String }
type Tag { name: String!, value: String! }
type Block { id: ID!, timestamp: Int!, height: Int!, previous: ID! }
type Bundle { id: ID! }
"""


def block_id(height: int) -> str:
    """A stable id for the node's block at ``height`` (it has no Arweave block of its own)."""
    return b64url(hashlib.sha256(f"ao-appliance/block/{height}".encode()).digest())


def _transaction(item: items.Item) -> dict[str, Any]:
    zero = {"winston": "0", "ar": "0.000000000000"}
    content_type = items.first_tag(item, "Content-Type")
    return {
        "id": item.id, "anchor": b64url(item.anchor), "signature": b64url(item.signature),
        "recipient": item.target or "", "owner": {"address": item.owner_address,
                                                 "key": b64url(item.owner)},
        "fee": zero, "quantity": zero,
        "data": {"size": str(len(item.data)), "type": content_type},
        "tags": [{"name": n, "value": v} for n, v in item.tags],
        "block": None, "bundledIn": None, "parent": None,
    }


class GraphQLEndpoint:
    """Executes gateway queries against one node's item store."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.schema = graphql.build_schema(SDL)
        query = self.schema.query_type
        assert query is not None
        query.fields["transactions"].resolve = self._transactions
        query.fields["transaction"].resolve = self._one
        query.fields["blocks"].resolve = self._blocks

    def execute(self, body: Any) -> dict[str, Any]:
        """Run one ``{query, variables, operationName}`` request; GraphQL errors stay in-band."""
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            raise BadRequest("GraphQL body needs a query string")
        variables = body.get("variables")
        if variables is not None and not isinstance(variables, dict):
            raise BadRequest("GraphQL variables must be an object")
        if len(body["query"]) > MAX_QUERY_BYTES:
            raise BadRequest(f"GraphQL query longer than {MAX_QUERY_BYTES} characters")
        try:
            document = graphql.parse(body["query"], max_tokens=MAX_TOKENS)
        except graphql.GraphQLError as exc:
            return {"data": None, "errors": [exc.formatted]}
        errors = graphql.validate(self.schema, document, max_errors=20)
        if errors:
            return {"data": None, "errors": [e.formatted for e in errors]}
        operation = body.get("operationName")
        result = graphql.execute_sync(self.schema, document, variable_values=variables,
                                      operation_name=operation if isinstance(operation, str)
                                      else None, context_value={"lookups": 0})
        return dict(result.formatted)

    @staticmethod
    def _budget(info: Any, args: dict[str, Any]) -> None:
        context = info.context
        context["lookups"] += 1
        if context["lookups"] > MAX_LOOKUPS:
            raise graphql.GraphQLError(f"more than {MAX_LOOKUPS} transaction lookups in one "
                                       f"request")
        lists = [args.get(name) or [] for name in ("ids", "owners", "recipients", "tags")]
        lists += [t.get("values") or [] for t in args.get("tags") or []]
        if any(len(values) > MAX_FILTER_VALUES for values in lists):
            raise graphql.GraphQLError(f"a filter lists more than {MAX_FILTER_VALUES} values")

    def _one(self, _root: Any, info: Any, id: str) -> dict[str, Any] | None:  # noqa: A002
        self._budget(info, {})
        rows = self.node.find_items(ids=[id], limit=1)
        return _transaction(items.parse_unverified(rows[0][1])) if rows else None

    def _blocks(self, _root: Any, info: Any, **args: Any) -> dict[str, Any]:
        """The node's blocks (see :meth:`Node.blocks`), timestamps in seconds as Arweave's."""
        self._budget(info, args)
        first = min(max(int(args.get("first") or 10), 0), MAX_FIRST)
        height = args.get("height") or {}
        low, high = height.get("min"), height.get("max")
        ids = args.get("ids")
        chain = self.node.blocks()
        blocks = [{"id": block_id(h), "height": h, "timestamp": ts // 1000,
                   "previous": block_id(chain[i - 1][0]) if i else ""}
                  for i, (h, ts) in enumerate(chain)]
        blocks = [b for b in blocks if (low is None or b["height"] >= low)
                  and (high is None or b["height"] <= high) and (ids is None or b["id"] in ids)]
        if not str(args.get("sort", "")).endswith("ASC"):
            blocks.reverse()
        after = args.get("after")
        if after:
            keep = [i for i, b in enumerate(blocks) if str(b["height"]) == after]
            if not keep:
                raise graphql.GraphQLError("after must be a cursor returned by this node")
            blocks = blocks[keep[0] + 1:]
        edges = [{"cursor": str(b["height"]), "node": b} for b in blocks[:first]]
        return {"pageInfo": {"hasNextPage": len(blocks) > first}, "edges": edges}

    def _transactions(self, _root: Any, info: Any, **args: Any) -> dict[str, Any]:
        self._budget(info, args)
        first = min(max(int(args.get("first") or 10), 0), MAX_FIRST)
        after = args.get("after")
        try:
            after_row = int(after) if after else None
        except ValueError:
            raise graphql.GraphQLError("after must be a cursor returned by this node") from None
        tags = [(t["name"], list(t["values"]), t.get("op", "EQ") == "NEQ")
                for t in args.get("tags") or []]
        rows = self.node.find_items(
            ids=args.get("ids"), owners=args.get("owners"), recipients=args.get("recipients"),
            tags=tags, after_row=after_row, ascending=str(args.get("sort", "")).endswith("ASC"),
            limit=first + 1)
        edges = [{"cursor": str(row), "node": _transaction(items.parse_unverified(raw))}
                 for row, raw in rows[:first]]
        return {"pageInfo": {"hasNextPage": len(rows) > first}, "edges": edges}
