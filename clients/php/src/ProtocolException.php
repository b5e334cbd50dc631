<?php

declare(strict_types=1);

namespace Pushhub;

if (!class_exists(PushhubException::class, false)) {
    require_once __DIR__ . '/PushhubException.php';
}

/**
 * The peer answered something the text port never answers: a line that is
 * not `ok`, `fail` or a JSON object with a boolean `ok`, a reply missing the
 * field its command always has, or a line when nothing was asked. The
 * connection is closed (its replies can no longer be matched to requests);
 * the next call opens a new one.
 */
final class ProtocolException extends PushhubException
{
    public function __construct(string $message, private readonly string $answerLine = '')
    {
        parent::__construct($message);
    }

    /** The offending line (without its newline), cut to 200 bytes. */
    public function getAnswerLine(): string
    {
        return $this->answerLine;
    }
}
