<?php

declare(strict_types=1);

namespace Pushhub;

/**
 * The base of every exception this client throws about the hub: catch this
 * one to handle them all. Argument mistakes (a uid of the wrong shape, data
 * that cannot be JSON) are \InvalidArgumentException instead, thrown before
 * anything is sent.
 */
class PushhubException extends \RuntimeException
{
}
