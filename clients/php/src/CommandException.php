<?php

declare(strict_types=1);

namespace Pushhub;

if (!class_exists(PushhubException::class, false)) {
    require_once __DIR__ . '/PushhubException.php';
}

/**
 * The hub answered a request with an error: `{"ok":false,"error":"..."}`.
 *
 * The hub gives no error code on the wire, only the sentence (README,
 * "Errors"); getError() is that sentence exactly, getMessage() adds the
 * command's name. The connection stays usable.
 *
 * Thrown by a pipelined call too, after every answer of the batch was read:
 * getResults() then holds every position's result, with a CommandException
 * at each position that failed, and getIndex() says which one this is.
 */
final class CommandException extends PushhubException
{
    /** @var list<mixed> */
    private array $results = [];
    private ?int $index = null;

    /**
     * @param array<string,mixed> $reply the hub's whole reply, decoded
     */
    public function __construct(
        private readonly string $error,
        private readonly ?string $cmd,
        private readonly array $reply,
    ) {
        parent::__construct(sprintf('pushhub %s: %s', $cmd ?? 'request', $error));
    }

    /** The hub's `error` text, as it sent it. */
    public function getError(): string
    {
        return $this->error;
    }

    /** The request's `cmd` (null for the original `{"uid":...}` form). */
    public function getCmd(): ?string
    {
        return $this->cmd;
    }

    /** The `id` the hub copied from the request, if it had one. */
    public function getId(): mixed
    {
        return $this->reply['id'] ?? null;
    }

    /** @return array<string,mixed> the whole reply, decoded */
    public function getReply(): array
    {
        return $this->reply;
    }

    /** @return list<mixed> in a pipeline: every request's result, this exception at failed positions */
    public function getResults(): array
    {
        return $this->results;
    }

    /** In a pipeline: the position (from 0) of the request this exception is about. */
    public function getIndex(): ?int
    {
        return $this->index;
    }

    /**
     * @internal set by Client for pipelined calls
     * @param list<mixed> $results
     */
    public function withBatch(array $results, int $index): self
    {
        $this->results = $results;
        $this->index = $index;
        return $this;
    }
}
