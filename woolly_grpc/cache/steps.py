"""Chain steps cached one by one, so a chain re-run replays the steps it already finished."""

from __future__ import annotations

from woolly_grpc import convert
from woolly_grpc._gen.woolly.v1 import agent_pb2
from woolly_grpc.core import AgentResult, RunRequest

from .policy import CachePolicy
from .results import ResultCache


class StepResultCache:
    """One chain call's steps in the result cache (the core's StepCache).

    Made per call, with that call's tenant and cache policy, and handed to the chain runner: a
    step reads the cache only when the call may read it, and writes only when it may write.
    The key covers everything the step saw: repository, agent (and saved-agent revision),
    query, context, earlier results.
    """

    def __init__(self, cache: ResultCache, *, tenant: str, policy: CachePolicy) -> None:
        self.cache = cache
        self.tenant = tenant
        self.policy = policy

    def _key(self, request: RunRequest) -> str:
        saved = request.saved_agent
        payload = "\x00".join(
            [
                request.repository,
                request.agent_type.value,
                f"{saved.id}@{saved.revision}" if saved else "",
                request.query,
                convert.canonical_json(request.context),
                *(r.content for r in request.earlier_results),
            ]
        )
        return self.cache.key("step", payload.encode(), self.tenant)

    async def get(self, request: RunRequest) -> AgentResult | None:
        """The cached result of this step, if the call's policy allows reading."""
        if not self.policy.read:
            return None
        entry = await self.cache.get(self._key(request))
        if entry is None or len(entry.messages) != 1:
            return None
        if not self.policy.accepts(entry, self.cache.clock()):
            return None
        return convert.result_from_proto(agent_pb2.AgentResult.FromString(entry.messages[0]))

    async def put(self, request: RunRequest, result: AgentResult) -> None:
        """Remember a finished step, if the call's policy allows writing."""
        if not self.policy.write:
            return
        message = convert.result_to_proto(result)
        message.cached = True
        await self.cache.put(self._key(request), [message.SerializeToString()], self.policy.ttl_s)
