// Package amqp is celerycompat's RabbitMQ transport: Celery task messages over AMQP 0-9-1 exactly
// as kombu's py-amqp transport (Celery's default broker, amqp:// URLs) writes and reads them, so
// Go producers and workers share queues with Python Celery on RabbitMQ.
//
// *Transport implements celerycompat.Transport: celerycompat.NewProducer and NewWorker take it
// where they take a *celerycompat.Broker on Redis. It is also a celerycompat.FanoutTransport, so
// remote control (`celery inspect`/`control`, celerycompat.NewControl, mingle), worker
// heartbeats and task events work over RabbitMQ too (see Transport.Fanout).
//
// What goes on the wire (see celerycompat/protocol.Parts for the message mapping):
//   - Topology as Celery declares it: for queue Q a durable direct exchange Q (the default queue
//     "celery" gets exchange "celery"), a durable queue Q bound to it with routing key Q, and the
//     queue's arguments as configured ("x-max-priority" from Config.QueueMaxPriority, Celery's
//     task_queue_max_priority; "x-queue-type" and the rest kept as given in Config.Queues).
//     Integers in arguments and headers are written as py-amqp writes them (signed 32 bits when
//     they fit), so the tables on the wire are the ones Python writes. (RabbitMQ 3.10 accepts a
//     re-declaration of x-max-priority as int64 too: checked, not relied on.)
//   - Publishing like Celery's send_task: to the default exchange "" with the queue name as
//     routing key when the message's exchange is "" (what celerycompat's producer sends), else to
//     the given exchange. Persistent (delivery_mode 2), correlation_id = task id, reply_to,
//     priority, protocol 2 headers; publisher confirms on a dedicated channel, so PublishBatch
//     returns nil for a message only once the broker has confirmed it.
//   - Consuming like a Celery worker: basic.consume on every queue of one channel, acks manual,
//     basic.qos prefetch_count = ConsumerConfig.Prefetch plus the messages held for their ETA
//     (Celery's qos.increment_eventually), global as Celery applies it on RabbitMQ ≥ 3.3
//     (per consumer when a queue is a quorum queue: RabbitMQ refuses basic.consume on a quorum
//     queue under global QoS with NOT_IMPLEMENTED; then, as in Celery, the prefetch stays as it
//     was when consuming started and Hold does not change it).
//   - Settling: Ack is basic.ack, coalesced: acks that come close together go out as one
//     basic.ack with multiple=true over contiguous finished deliveries, within a few milliseconds
//     (a prefetch under 16 sends each at once; a delivery held for its ETA is never covered);
//     Requeue is basic.reject with requeue (RabbitMQ puts the message
//     back at its old place, near the head, whatever back says: AMQP has no "append to the tail");
//     DeadLetter publishes the message unchanged (body, headers, properties) with reason headers
//     to the durable queue Config.DeadLetterQueue ("celerybridge.deadletter", the name of the
//     Redis transport's dead-letter list), waits for the confirm, then acks. A crash in between
//     leaves a duplicate, never a loss.
//   - Remote control and events as kombu declares them: the celery.pidbox fanout exchange (not
//     durable) and each worker's "<node>.celery.pidbox" queue (auto-delete, x-expires 10 s,
//     x-message-ttl 300 s, exclusive when Codec.PeerVersion is 5.5 or later, as Celery's
//     control_queue_exclusive), replies through the reply.celery.pidbox direct exchange to the
//     client's "<oid>.reply.celery.pidbox" queue with headers ticket and clock, delivery mode 1;
//     events on the durable celeryev topic exchange with their routing key and a hostname header.
//     AMQP cannot list a fanout exchange's queues, so mingle greets every worker and waits its
//     second, as Celery does.
//   - Celery's rpc:// result backend (RPCBackend; NewApp with ResultBackend "rpc://"): results
//     published to the default exchange with the task's reply_to as routing key and its id as
//     correlation_id, received on the client's auto-delete reply queue (docs/amqp-wire.md §6).
//   - A lost connection is re-established with exponential backoff. Messages delivered on the old
//     channel are the broker's again (it redelivers them with redelivered=true); settling one of
//     them returns an error wrapping ErrStaleDelivery. Settling a delivery twice, or one of
//     another Consumer, returns an error wrapping ErrNotHeld and sends nothing.
//
// The AMQP client is github.com/rabbitmq/amqp091-go, maintained by the RabbitMQ team and the
// client other Celery-on-Go projects use; its experimental automatic recovery is not used (the
// transport reconnects itself so that delivery tags stay unique across channels).
//
// Imports: celerycompat, celerycompat/protocol, amqp091-go and the standard library only.
package amqp
