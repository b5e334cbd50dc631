<?php

declare(strict_types=1);

namespace Pushhub\Tests;

/**
 * A tiny WebSocket client for the tests, playing a browser page: the
 * handshake, masked frames out, text, binary, ping and close frames in.
 * Every read waits at most the timeout it is given.
 */
final class WsClient
{
    /** @var resource */
    private $socket;
    private string $buffer = '';
    /** Where the unread part of the buffer starts. */
    private int $pos = 0;
    /** The close frame's code, once one came (1006 if the connection ended without one). */
    public ?int $closeCode = null;
    public string $closeReason = '';

    public function __construct(string $hostPort, string $path = '/', float $timeout = 3.0)
    {
        $socket = @stream_socket_client("tcp://$hostPort", $errno, $errstr, $timeout);
        if ($socket === false) {
            throw new \RuntimeException("ws connect to $hostPort: $errstr");
        }
        $this->socket = $socket;
        $key = base64_encode(random_bytes(16));
        fwrite($socket, "GET $path HTTP/1.1\r\nHost: $hostPort\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            . "Sec-WebSocket-Key: $key\r\nSec-WebSocket-Version: 13\r\n\r\n");
        stream_set_blocking($socket, false);
        $deadline = microtime(true) + $timeout;
        while (($end = strpos($this->buffer, "\r\n\r\n")) === false) {
            $this->fill($deadline) || throw new \RuntimeException("ws $hostPort: no handshake answer");
        }
        $head = substr($this->buffer, 0, $end);
        $this->buffer = substr($this->buffer, $end + 4);
        if (!str_starts_with($head, 'HTTP/1.1 101')) {
            throw new \RuntimeException("ws $hostPort: handshake refused: " . strtok($head, "\r\n"));
        }
        $accept = base64_encode(sha1($key . '258EAFA5-E914-47DA-95CA-C5AB0DC85B11', true));
        if (stripos($head, "Sec-WebSocket-Accept: $accept") === false) {
            throw new \RuntimeException("ws $hostPort: wrong Sec-WebSocket-Accept");
        }
    }

    public function sendText(string $text): void
    {
        $this->sendFrame(0x1, $text);
    }

    private function sendFrame(int $opcode, string $payload): void
    {
        $len = strlen($payload);
        $head = chr(0x80 | $opcode);
        if ($len < 126) {
            $head .= chr(0x80 | $len);
        } elseif ($len < 65536) {
            $head .= chr(0x80 | 126) . pack('n', $len);
        } else {
            $head .= chr(0x80 | 127) . pack('J', $len);
        }
        $mask = random_bytes(4);
        $masked = $payload ^ str_repeat($mask, intdiv($len, 4) + 1);
        $frame = $head . $mask . substr($masked, 0, $len);
        stream_set_blocking($this->socket, true);
        fwrite($this->socket, $frame);
        stream_set_blocking($this->socket, false);
    }

    /**
     * The next data message, waiting at most $timeout seconds: ['text', $s]
     * or ['binary', $s]; null at the timeout or once the connection closed
     * (then closeCode says how).
     *
     * @return array{0:string,1:string}|null
     */
    public function read(float $timeout = 3.0): ?array
    {
        $deadline = microtime(true) + $timeout;
        while (true) {
            $frame = $this->frame();
            if ($frame !== null) {
                [$opcode, $payload] = $frame;
                switch ($opcode) {
                    case 0x1:
                        return ['text', $payload];
                    case 0x2:
                        return ['binary', $payload];
                    case 0x9:
                        $this->sendFrame(0xA, $payload);
                        continue 2;
                    case 0x8:
                        $this->closeCode = strlen($payload) >= 2 ? unpack('n', $payload)[1] : 1005;
                        $this->closeReason = (string) substr($payload, 2);
                        return null;
                    default:
                        continue 2;
                }
            }
            if ($this->closeCode !== null || !$this->fill($deadline)) {
                return null;
            }
        }
    }

    /** The next text message, or null (timeout, close). */
    public function readText(float $timeout = 3.0): ?string
    {
        $message = $this->read($timeout);
        return $message === null ? null : $message[1];
    }

    /** Waits for the close frame (or the end of the connection) and returns its code; null at the timeout. */
    public function waitClose(float $timeout = 3.0): ?int
    {
        $deadline = microtime(true) + $timeout;
        while ($this->closeCode === null && microtime(true) < $deadline) {
            $this->read(max(0.001, $deadline - microtime(true)));
        }
        return $this->closeCode;
    }

    public function close(): void
    {
        if (is_resource($this->socket)) {
            @fclose($this->socket);
        }
    }

    public function __destruct()
    {
        $this->close();
    }

    /** One whole frame from the buffer, unfragmented messages only (the hub sends no fragments). */
    private function frame(): ?array
    {
        $p = $this->pos;
        $have = strlen($this->buffer) - $p;
        if ($have < 2) {
            return null;
        }
        $b0 = ord($this->buffer[$p]);
        $b1 = ord($this->buffer[$p + 1]);
        $len = $b1 & 0x7f;
        $at = 2;
        if ($len === 126) {
            if ($have < 4) {
                return null;
            }
            $len = unpack('n', $this->buffer, $p + 2)[1];
            $at = 4;
        } elseif ($len === 127) {
            if ($have < 10) {
                return null;
            }
            $len = unpack('J', $this->buffer, $p + 2)[1];
            $at = 10;
        }
        if ($b1 & 0x80) {
            throw new \RuntimeException('ws: the server sent a masked frame');
        }
        if ($have < $at + $len) {
            return null;
        }
        $payload = substr($this->buffer, $p + $at, $len);
        $this->pos = $p + $at + $len;
        return [$b0 & 0x0f, $payload];
    }

    /** Reads what is there, waiting until $deadline; false at the deadline or at the end of the stream. */
    private function fill(float $deadline): bool
    {
        $left = $deadline - microtime(true);
        if ($left <= 0) {
            return false;
        }
        $read = [$this->socket];
        $write = $except = null;
        if (@stream_select($read, $write, $except, (int) $left, (int) (fmod($left, 1.0) * 1e6)) < 1) {
            return false;
        }
        $chunk = @fread($this->socket, 1 << 20);
        if ($chunk === false || ($chunk === '' && feof($this->socket))) {
            $this->closeCode ??= 1006;
            return false;
        }
        $this->buffer = substr($this->buffer, $this->pos) . $chunk;
        $this->pos = 0;
        return true;
    }
}
