<?php

declare(strict_types=1);

namespace Pushhub;

/**
 * A batch of requests sent on one connection without waiting between them:
 * every line is written, then every answer read, in order.
 *
 * Each method takes the same arguments as the Client method of the same name
 * and returns the pipeline, so calls chain; execute() (or Client::pipeline())
 * returns the results in the order the requests were added, each as the
 * Client method would have returned it.
 *
 * @method self push(string|int|array $uid, mixed $data, array $options = [])
 * @method self pushLine(array $line)
 * @method self pushConn(string $conn, mixed $data, bool $binary = false)
 * @method self broadcast(mixed $data)
 * @method self publish(string|array $ch, mixed $data)
 * @method self subscribe(string|int|array $uid, string|array $ch)
 * @method self unsubscribe(string|int|array $uid, string|array $ch)
 * @method self online(string|int $uid)
 * @method self connections(string|int $uid)
 * @method self onlineMany(array $uids)
 * @method self kick(string|int|array $uid)
 * @method self stats(bool $cluster = false)
 * @method self channels(string $prefix = '')
 * @method self members(string $ch)
 * @method self register(string|int $uid, string $kind, string|array $device)
 * @method self unregister(string|int $uid, ?string $kind = null, string|array|null $device = null)
 * @method self devices(string|int $uid)
 * @method self vapidKey()
 * @method self command(array $cmd)
 */
final class Pipeline implements \Countable
{
    /** @var list<array{0:string,1:?string,2:\Closure,3:float}> */
    private array $requests = [];

    /**
     * @internal made by Client::batch() and Client::pipeline()
     * @param \Closure(string, array<mixed>): array{0:string,1:?string,2:\Closure,3:float} $prepare
     * @param \Closure(list<array{0:string,1:?string,2:\Closure,3:float}>): list<mixed> $run
     */
    public function __construct(private readonly \Closure $prepare, private readonly \Closure $run)
    {
    }

    /** @param array<mixed> $args */
    public function __call(string $method, array $args): self
    {
        $this->requests[] = ($this->prepare)($method, $args);
        return $this;
    }

    public function count(): int
    {
        return count($this->requests);
    }

    /**
     * Sends the batch and returns its results, in order; the pipeline is then
     * empty again.
     *
     * @return list<mixed>
     * @throws CommandException after every answer was read, if some request failed
     * @throws ConnectionException|ProtocolException
     */
    public function execute(): array
    {
        $requests = $this->requests;
        $this->requests = [];
        return ($this->run)($requests);
    }
}
