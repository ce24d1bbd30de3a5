"""The policies of IAM groups, for STS roles that name iam_groups.

Vault's engine turns a role's iam_groups into session policies for STS
credentials: inline group policies join the session policy document, and
attached managed policies join its policy ARNs.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_iam import IAMClient


def group_policies(iam: IAMClient, groups: list[str]) -> tuple[list[str], list[str]]:
    """Return (inline policy documents as JSON, attached policy ARNs) of `groups`."""
    documents: list[str] = []
    arns: list[str] = []
    for group in groups:
        inline = iam.get_paginator("list_group_policies")
        for names in inline.paginate(GroupName=group):
            for name in names["PolicyNames"]:
                found = iam.get_group_policy(GroupName=group, PolicyName=name)
                documents.append(_as_json(found["PolicyDocument"]))
        attached = iam.get_paginator("list_attached_group_policies")
        for page in attached.paginate(GroupName=group):
            arns += [
                p["PolicyArn"] for p in page["AttachedPolicies"] if "PolicyArn" in p
            ]
    return documents, arns


def _as_json(document: Any) -> str:
    # botocore decodes policy documents into dicts; some endpoints return text.
    if isinstance(document, str):
        return json.dumps(json.loads(document), separators=(",", ":"))
    return json.dumps(document, separators=(",", ":"))
