"""KafkaBus: the distributed bus on Apache Kafka via aiokafka.

Idempotent producer with acks=all, replaced by a new one after a failed publish; consumer
groups with manual commits made only after the database transaction commits; a rebalance
waits for the in-flight batch to finish and commit before partitions move.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Sequence

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError
from aiokafka.partitioner import murmur2
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed

from shared.bus.kafka_batches import Stored, append, done, header_list, send_batch
from shared.bus.kafka_subscription import KafkaSubscription
from shared.bus.port import Bus, BusError, OutgoingMessage, RevokeHook
from shared.observability import metrics

log = structlog.get_logger(__name__)


_TOPIC_CONFIG = {"retention.ms": "-1"}
_TOPICS_LISTED_S = 30.0


class _NotListed(Exception):
    def __init__(self, topics: set[str]) -> None:
        super().__init__(f"topics not listed yet: {sorted(topics)}")
        self.topics = topics


class KafkaBus(Bus):
    """Publishes to and subscribes on a Kafka cluster.

    Args:
        bootstrap_servers: `host:port[,host:port]`.
        client_id: names this process in broker logs.
        partitions: partitions of topics this bus creates.
        replication_factor: replicas of topics this bus creates.
        session_timeout_ms: how long a silent (crashed) member keeps its partitions.
        request_timeout_ms: how long a publish may wait for the broker, to store its
            records or to take them at all, before it fails.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str = "handoff",
        partitions: int = 6,
        replication_factor: int = 1,
        session_timeout_ms: int = 10_000,
        request_timeout_ms: int = 30_000,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.session_timeout_ms = session_timeout_ms
        self.request_timeout_ms = request_timeout_ms
        self._producer: AIOKafkaProducer | None = None
        self._failed: AIOKafkaProducer | None = None  # the producer, if a publish of it failed
        self._replacing = asyncio.Lock()
        self._known_topics: set[str] = set()
        self._key_hashes: dict[bytes, int] = {}

    async def start(self) -> None:
        self._producer = await self._new_producer()

    async def _new_producer(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=2,
            max_batch_size=256 * 1024,
            request_timeout_ms=self.request_timeout_ms,
        )
        try:
            await producer.start()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            if isinstance(exc, KafkaError):
                raise BusError(
                    f"Kafka at {self.bootstrap_servers} is not reachable: {exc}"
                ) from exc
            raise
        return producer

    async def close(self) -> None:
        async with self._replacing:
            if self._producer is not None:
                producer, self._producer = self._producer, None
                await self._stop(producer)

    async def _stop(self, producer: AIOKafkaProducer) -> None:
        try:
            await asyncio.wait_for(producer.stop(), timeout=self.request_timeout_ms / 1000)
        except Exception as exc:  # what it still held is sent again by whoever sent it
            log.warning("Kafka producer did not stop cleanly", error=repr(exc))

    def _failed_with(self, producer: AIOKafkaProducer) -> None:
        if producer is self._producer:
            self._failed = producer

    async def _sending_producer(self, after: Awaitable[None] | None) -> AIOKafkaProducer:
        """The producer to publish with: a new one in place of one whose publish failed.

        An idempotent producer numbers its batches per partition, and the broker stores a
        batch only after the one numbered before it. A batch that failed (the broker away
        for longer than the request timeout) keeps its number, and aiokafka does not
        reset the numbers after it: every later batch of that producer is refused as out
        of order (`OutOfOrderSequenceNumber`) for as long as the process lives. Its
        senders send the failed messages again anyway (the relay does), so the producer
        is replaced: the new one has a producer id of its own and numbers from zero.

        Order across the two is kept by two rules. The old producer's batches are all
        settled (stored or failed) before the new one sends anything, so nothing the old
        one stores comes after the new one's. And messages that must follow earlier ones
        (`after`) are sent on the producer those went out on or not at all: a sequence
        that began on the old producer fails, and its sender starts it over on the new one
        (a batch stored by the old one then comes again, and the consumers' inboxes drop
        the repeat).
        """
        producer = self.producer
        if isinstance(after, Stored) and after.producer is not producer:
            raise BusError("publish to Kafka failed: the producer was replaced; send it all again")
        if self._failed is not producer:
            return producer
        if after is not None:
            raise BusError("publish to Kafka failed: an earlier publish failed; send it all again")
        async with self._replacing:
            old = self._producer
            if old is not None and self._failed is old:
                try:  # everything the old one holds is settled before the new one sends
                    await asyncio.wait_for(old.flush(), timeout=self.request_timeout_ms / 1000)
                except TimeoutError:
                    raise BusError(
                        "publish to Kafka failed: the previous producer still holds batches "
                        "the broker has not answered"
                    ) from None
                await self._stop(old)
                self._producer = await self._new_producer()
                self._failed = None
                metrics.KAFKA_PRODUCERS_REPLACED.labels(client_id=self.client_id).inc()
                log.warning("Kafka producer replaced after a failed publish")
        return self.producer

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise BusError("KafkaBus is not started")
        return self._producer

    async def ping(self) -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers,
            client_id=f"{self.client_id}-ping",
            request_timeout_ms=5000,
        )
        try:
            await admin.start()
            await admin.describe_cluster()
        except KafkaError as exc:
            raise BusError(f"Kafka at {self.bootstrap_servers} is not reachable: {exc}") from exc
        finally:
            await admin.close()

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create the topics that do not exist; returns once the cluster lists every one.

        A topic another replica creates meanwhile is fine; so is one whose deletion is
        still under way (the broker answers that it exists): it is created again once the
        deletion is done, within `_TOPICS_LISTED_S`.
        """
        missing = [t for t in topics if t not in self._known_topics]
        if not missing:
            return
        async with self._admin() as admin:
            try:
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception_type(_NotListed),
                    stop=stop_after_delay(_TOPICS_LISTED_S),
                    wait=wait_fixed(0.2),
                    reraise=True,
                ):
                    with attempt:
                        await self._create_missing(admin, missing)
            except _NotListed as exc:
                raise BusError(
                    f"Kafka did not list the topics {sorted(exc.topics)} "
                    f"{_TOPICS_LISTED_S:.0f} s after creating them"
                ) from None
        self._known_topics.update(missing)

    async def _create_missing(self, admin: AIOKafkaAdminClient, topics: list[str]) -> None:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(t, self.partitions, self.replication_factor, topic_configs=_TOPIC_CONFIG)
            for t in topics
            if t not in existing
        ]
        if not new:
            return
        with contextlib.suppress(TopicAlreadyExistsError):  # another replica, or a deletion
            await admin.create_topics(new)
        if unlisted := set(topics) - set(await admin.list_topics()):
            raise _NotListed(unlisted)

    async def list_topics(self) -> set[str]:
        """Every topic on the cluster."""
        async with self._admin() as admin:
            return set(await admin.list_topics())

    async def delete_topics(self, topics: Sequence[str]) -> None:
        """Delete `topics` (and their records) from the cluster."""
        async with self._admin() as admin:
            for start in range(0, len(topics), 100):  # bounded requests
                await admin.delete_topics(list(topics[start : start + 100]))
        self._known_topics.difference_update(topics)

    @contextlib.asynccontextmanager
    async def _admin(self) -> AsyncIterator[AIOKafkaAdminClient]:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers, client_id=f"{self.client_id}-admin"
        )
        await admin.start()
        try:
            yield admin
        finally:
            await admin.close()

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Send `messages` as one record batch per partition and wait until all are stored."""
        await (await self.enqueue(messages))

    async def enqueue(
        self, messages: Sequence[OutgoingMessage], *, after: Awaitable[None] | None = None
    ) -> Awaitable[None]:
        """Hand `messages` to the producer, in order, and return what completes once the
        broker has stored all of them (raising `BusError` if it could not). Messages
        enqueued later go out after these on every partition, so a caller may enqueue its
        next messages before this one completes.

        Partitions are the producer's own choice (murmur2 of the key, as the Java client
        does), so a key's messages land where `send()` would put them; the hashes of
        recent keys are cached, since the pure-Python murmur2 costs more than the rest of
        a send. Per partition the batches go out in order.
        """
        if not messages:
            return done()
        producer = await self._sending_producer(after)
        timeout = self.request_timeout_ms / 1000
        try:
            partitions: dict[str, list[int]] = {}
            for topic in dict.fromkeys(m.topic for m in messages):
                partitions[topic] = list(await producer.partitions_for(topic))
            grouped: dict[tuple[str, int], list[tuple[bytes, OutgoingMessage]]] = {}
            for m in messages:
                key = m.key.encode()
                choices = partitions[m.topic]
                tp = (m.topic, choices[self._key_hash(key) % len(choices)])
                grouped.setdefault(tp, []).append((key, m))
            deliveries = []
            for (topic, partition), items in grouped.items():
                batch = producer.create_batch()
                for key, m in items:
                    if append(batch, key, m):
                        continue
                    if batch.record_count():  # full: ship it, go on in a new one
                        deliveries.append(
                            await send_batch(producer, batch, topic, partition, timeout)
                        )
                        batch = producer.create_batch()
                    if not append(batch, key, m):  # larger than a batch: let send() say so
                        deliveries.append(
                            await producer.send(
                                topic,
                                m.value,
                                key=key,
                                partition=partition,
                                headers=header_list(m.headers),
                            )
                        )
                if batch.record_count():
                    deliveries.append(await send_batch(producer, batch, topic, partition, timeout))
        except KafkaTimeoutError as exc:  # not taken: the producer's numbering has no gap
            raise BusError(f"publish to Kafka failed: {exc}") from exc
        except KafkaError as exc:
            self._failed_with(producer)
            raise BusError(f"publish to Kafka failed: {exc}") from exc
        return Stored(producer, deliveries, functools.partial(self._failed_with, producer))

    def _key_hash(self, key: bytes) -> int:
        hashed = self._key_hashes.get(key)
        if hashed is None:
            if len(self._key_hashes) >= 100_000:
                self._key_hashes.clear()
            hashed = self._key_hashes[key] = murmur2(key) & 0x7FFFFFFF
        return hashed

    def subscribe(
        self, *, group: str, topics: Sequence[str], on_revoke: RevokeHook | None = None
    ) -> KafkaSubscription:
        return KafkaSubscription(self, group=group, topics=tuple(topics), on_revoke=on_revoke)
