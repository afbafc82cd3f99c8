"""AWS sessions per Bedrock region: base credentials, or an IAM role assumed via STS, cached and refreshed early."""

from __future__ import annotations

from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import RefreshableCredentials

from gateway.config import BedrockRegion, ProviderConfig
from gateway.secrets.refs import value_of


def _base_session(config: ProviderConfig) -> boto3.Session:
    key_id, secret = value_of(config.aws_access_key_id), value_of(config.aws_secret_access_key)
    if key_id and secret:
        return boto3.Session(aws_access_key_id=key_id, aws_secret_access_key=secret)
    return boto3.Session()  # boto3's default chain: environment, profile, instance role


def region_session(config: ProviderConfig, region: BedrockRegion, session_name: str) -> boto3.Session:
    """A session for `region`: the base credentials, or `region.role_arn` assumed through STS.

    Assumed credentials are cached by botocore and refreshed `role_refresh_margin_s` before
    they expire, on the first call that needs them (one STS call per refresh, not per request).
    """
    base = _base_session(config)
    if region.role_arn is None:
        return base
    sts = base.client("sts", region_name=region.name, endpoint_url=config.sts_endpoint_url,
                      config=Config(retries={"total_max_attempts": 2}))  # fmt: skip

    def refresh() -> dict[str, Any]:
        creds = sts.assume_role(RoleArn=region.role_arn, RoleSessionName=session_name)["Credentials"]
        return {"access_key": creds["AccessKeyId"], "secret_key": creds["SecretAccessKey"],
                "token": creds["SessionToken"], "expiry_time": creds["Expiration"].isoformat()}  # fmt: skip

    margin = config.role_refresh_margin_s
    credentials = RefreshableCredentials.create_from_metadata(
        refresh(),
        refresh_using=refresh,
        method="sts-assume-role",
        advisory_timeout=margin,
        mandatory_timeout=margin / 2,
    )
    core = botocore.session.get_session()
    core._credentials = credentials  # botocore has no public setter for refreshable credentials; common practice
    return boto3.Session(botocore_session=core, region_name=region.name)
