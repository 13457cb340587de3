"""The objects a TradingBot owns, built as plain manifests (pure functions, no I/O).

* ConfigMap ``<bot>-config``: the resolved config (``config.json``) and the symbol list
  (``symbols``, comma separated) the screener pods read at start.
* StatefulSet ``<bot>-bot-ws``: one bot_ws replica per chunk; pod ``<bot>-bot-ws-N`` takes
  chunk N (bot_ws derives CHUNK_INDEX from the ordinal at the end of POD_NAME). Its pod is
  the chart's (``cdb.screenerPod``, read from ``SCREENER_POD_TEMPLATE``: image, security
  contexts, probes, resources, volumes, the start-order init container); the operator
  adds only this bot's labels, its workload-hash annotation and its env.

The pod template depends only on :attr:`ResolvedConfig.workload_hash` inputs, so a change
to thresholds, risk limits, pause or shadow mode leaves it untouched: no restart.
"""

from __future__ import annotations

import json
from typing import Any

import kopf

from cdb_operator.pod_template import CONTAINER
from cdb_operator.settings import OperatorEnv
from cdb_operator.spec import ResolvedConfig, stable_hash

__all__ = [
    "HASH_ANNOTATION",
    "build_config_map",
    "build_stateful_set",
    "config_map_name",
    "owner_reference",
    "workload_name",
]

HASH_ANNOTATION = "cdb.io/applied-hash"
WORKLOAD_ANNOTATION = "cdb.io/workload-hash"
BOT_LABEL = "cdb.io/bot"
HTTP_PORT = 8000  # the port of the chart's screener pod


def config_map_name(bot: str) -> str:
    return f"{bot}-config"


def workload_name(bot: str) -> str:
    return f"{bot}-bot-ws"


def owner_reference(body: kopf.Body) -> dict[str, Any]:
    """The TradingBot as controller of what it owns: deleting it deletes them."""
    uid = body.metadata.uid
    if not uid:
        raise kopf.PermanentError("the TradingBot has no metadata.uid; cannot own objects")
    return {
        "apiVersion": body.get("apiVersion", "cdb.io/v1alpha1"),
        "kind": body.get("kind", "TradingBot"),
        "name": body.metadata.name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def labels(bot: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "bot-ws",
        "app.kubernetes.io/instance": bot,
        "app.kubernetes.io/component": "screener",
        "app.kubernetes.io/part-of": "cdb",
        "app.kubernetes.io/managed-by": "cdb-operator",
        BOT_LABEL: bot,
    }


def selector_labels(bot: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "bot-ws", BOT_LABEL: bot}


def _metadata(name: str, bot: str, namespace: str, owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": labels(bot),
        "ownerReferences": [owner],
    }


def _stamp(manifest: dict[str, Any]) -> dict[str, Any]:
    """Put the hash of the desired state on the object, so an unchanged one is never patched."""
    manifest["metadata"].setdefault("annotations", {})[HASH_ANNOTATION] = stable_hash(manifest)
    return manifest


def build_config_map(
    bot: str, namespace: str, owner: dict[str, Any], config: ResolvedConfig
) -> dict[str, Any]:
    return _stamp(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _metadata(config_map_name(bot), bot, namespace, owner),
            "data": {
                "config.json": json.dumps(config.document(), sort_keys=True, indent=1),
                "symbols": ",".join(config.symbols),
                "config-hash": config.config_hash,
            },
        }
    )


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _pod_env(bot: str, env: OperatorEnv, config: ResolvedConfig) -> list[dict[str, Any]]:
    plain = {
        "CHUNK_SIZE": str(config.chunk_size),
        "CHUNK_COUNT": str(config.chunks),
        "LOOKBACK_MIN": str(config.signal["lookbackMinutes"]),
        "MEXC_WS_URL": env.mexc_ws_url,
        "MEXC_REST_URL": env.mexc_rest_url,
        # Universe and kline backfill through bot_rest: its pacer and cache are shared by
        # every screener pod, where each pod alone would spend MEXC's per-IP request limit.
        "BOT_REST_URL": env.bot_rest_url,
        "REDIS_HOST": env.redis_host,
        "REDIS_PORT": str(env.redis_port),
        "REDIS_USERNAME": "bot_ws",  # the screener's own Redis ACL user (cdb.core.acl)
        "POSTGRES_HOST": env.postgres_host,
        "POSTGRES_PORT": str(env.postgres_port),
        "POSTGRES_DB": env.postgres_db,
        "POSTGRES_USER": env.postgres_user,
        "HTTP_PORT": str(HTTP_PORT),
        "BOT_NAME": bot,
        "FRAME_CLOCK_MAX_RATE": str(env.bot_ws_frame_clock_max_rate),
        "FRAME_MAX_AHEAD_S": str(env.bot_ws_frame_max_ahead_s),
        "FRAME_MAX_JUMP_S": str(env.bot_ws_frame_max_jump_s),
    }
    return [
        {
            "name": "SYMBOLS",
            "valueFrom": {"configMapKeyRef": {"name": config_map_name(bot), "key": "symbols"}},
        },
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        *({"name": key, "value": value} for key, value in plain.items()),
        _secret_env("REDIS_PASSWORD", env.redis_secret_name, "bot_ws-password"),
        _secret_env("POSTGRES_PASSWORD", env.postgres_secret_name, "postgres-password"),
    ]


def build_stateful_set(
    bot: str, namespace: str, owner: dict[str, Any], config: ResolvedConfig, env: OperatorEnv
) -> dict[str, Any]:
    """The screener: replicas = chunks; the chart's pod (``env.screener_pod``) with this
    bot's labels, its workload hash and its env, and nothing else of the operator's."""
    pod = env.screener_pod
    metadata = pod.setdefault("metadata", {})
    metadata["labels"] = labels(bot)
    metadata.setdefault("annotations", {})[WORKLOAD_ANNOTATION] = config.workload_hash
    (container,) = (c for c in pod["spec"]["containers"] if c["name"] == CONTAINER)
    container["env"] = _pod_env(bot, env, config)
    return _stamp(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": _metadata(workload_name(bot), bot, namespace, owner),
            "spec": {
                "serviceName": workload_name(bot),  # pod DNS only if such a Service exists
                "replicas": config.chunks,
                "podManagementPolicy": "Parallel",
                "revisionHistoryLimit": 3,
                "selector": {"matchLabels": selector_labels(bot)},
                "updateStrategy": {"type": "RollingUpdate"},
                "template": pod,
            },
        }
    )
