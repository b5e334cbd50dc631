<?php

declare(strict_types=1);

namespace Pushhub;

if (!class_exists(PushhubException::class, false)) {
    require_once __DIR__ . '/PushhubException.php';
}

/**
 * The text port could not be reached, or the connection failed while
 * requests were waiting for their answers.
 *
 * The connection is closed when this is thrown; the next call opens a new
 * one. Requests that were sent but not answered are never sent again: they
 * may or may not have been carried out (see maybeApplied()).
 */
final class ConnectionException extends PushhubException
{
    /** Connecting was refused: nothing listens at the address. */
    public const REFUSED = 'refused';
    /** Connecting failed for another reason (no route, a bad address, a connect timeout). */
    public const CONNECT_FAILED = 'connect_failed';
    /** The hub said nothing for longer than the timeout while answers were due. */
    public const TIMEOUT = 'timeout';
    /** The hub closed or reset the connection while answers were due. */
    public const LOST = 'lost';

    public function __construct(
        string $message,
        private readonly string $reason,
        private readonly string $address,
        private readonly int $unanswered = 0,
        private readonly int $answered = 0,
        ?\Throwable $previous = null,
    ) {
        parent::__construct($message, 0, $previous);
    }

    /** One of REFUSED, CONNECT_FAILED, TIMEOUT, LOST. */
    public function getReason(): string
    {
        return $this->reason;
    }

    /** The text port's address, as host:port. */
    public function getAddress(): string
    {
        return $this->address;
    }

    /** Requests sent (or being sent) whose answers never came. */
    public function getUnanswered(): int
    {
        return $this->unanswered;
    }

    /** Requests of the same batch that were answered before the failure. */
    public function getAnswered(): int
    {
        return $this->answered;
    }

    /** True when some request may have been carried out by the hub without its answer reaching us. */
    public function maybeApplied(): bool
    {
        return $this->unanswered > 0;
    }
}
