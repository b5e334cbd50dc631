<?php

declare(strict_types=1);

namespace Pushhub;

// Usable with a plain require of this file as well as through an autoloader:
// each class is loaded here only if nothing loaded it yet.
foreach (['PushhubException', 'ConnectionException', 'ProtocolException', 'CommandException', 'Pipeline'] as $class) {
    if (!class_exists(__NAMESPACE__ . '\\' . $class, false)) {
        require_once __DIR__ . '/' . $class . '.php';
    }
}
unset($class);

/**
 * A backend's client of pushhub's text port: one JSON line per request, one
 * answer line per request, in order, on one persistent TCP connection.
 *
 * The connection is opened by the first call, and again by the first call
 * after a failure. A request is sent once: if its answer does not come (the
 * connection is lost, or the hub is silent for longer than the timeout), a
 * ConnectionException says so and nothing is sent again.
 */
final class Client
{
    private const JSON_FLAGS = JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE
        | JSON_PRESERVE_ZERO_FRACTION | JSON_THROW_ON_ERROR;

    /** Methods a Pipeline may queue. */
    private const BATCHABLE = [
        'push', 'pushLine', 'pushConn', 'broadcast', 'publish', 'subscribe', 'unsubscribe',
        'online', 'connections', 'onlineMany', 'kick', 'stats', 'channels', 'members',
        'register', 'unregister', 'devices', 'vapidKey', 'command',
    ];

    private const MAX_UID_BYTES = 256;

    /** The longest answer line taken; past it the peer is not the text port (or not well). */
    private const MAX_ANSWER_BYTES = 64 << 20;

    /** host:port, as given (without tcp://). */
    private readonly string $address;

    /** @var resource|null */
    private $socket = null;

    /** Bytes read that do not make a whole line yet. */
    private string $buffer = '';

    /** @var list<array<string,mixed>> events read while waiting for answers (after listen()) */
    private array $events = [];

    /** @var array<string,mixed>|bool|null */
    private array|bool|null $lastReply = null;

    /**
     * @param string $address the text port, "host:port" or "tcp://host:port" ("[::1]:5678" for IPv6)
     * @param float $timeout seconds allowed for connecting, and the longest silence allowed
     *                       while answers are due (each byte that arrives restarts it)
     */
    public function __construct(string $address = '127.0.0.1:5678', private readonly float $timeout = 5.0)
    {
        $address = str_starts_with($address, 'tcp://') ? substr($address, 6) : $address;
        if (!preg_match('/^(\[[0-9A-Fa-f:.]+\]|[^\s:\/\[\]]+):([0-9]{1,5})$/', $address, $m)
            || (int) $m[2] < 1 || (int) $m[2] > 65535) {
            throw new \InvalidArgumentException(
                "pushhub: the address must be host:port or tcp://host:port, not `$address`"
            );
        }
        if (!($timeout > 0)) {
            throw new \InvalidArgumentException('pushhub: the timeout must be more than 0 seconds');
        }
        $this->address = $address;
    }

    public function __destruct()
    {
        $this->close();
    }

    /** The text port's address, host:port. */
    public function address(): string
    {
        return $this->address;
    }

    /** Whether a connection is open now (it opens on the next call otherwise). */
    public function isConnected(): bool
    {
        return $this->socket !== null;
    }

    /** Closes the connection; the next call opens a new one. */
    public function close(): void
    {
        if ($this->socket !== null) {
            @fclose($this->socket);
        }
        $this->socket = null;
        $this->buffer = '';
    }

    /**
     * The last single call's reply as the hub sent it, decoded (for the
     * fields the typed methods do not return: `refused` of subscribe,
     * `acked` and `apns` of a push, `unconfirmed` in a cluster...). `true`
     * or `false` after pushLine(). Not set by pipelined calls.
     *
     * @return array<string,mixed>|bool|null
     */
    public function lastReply(): array|bool|null
    {
        return $this->lastReply;
    }

    // ------------------------------------------------------------------
    // Commands. Each sends one line and returns its answer.

    /**
     * `push`: sends $data to every connection of the uid (or, with an array,
     * of each uid). A string reaches raw clients as its contents; any other
     * value as its JSON text. $options are added to the command as they are:
     * `ack_timeout`, `apns`, `fcm`, `webpush`, `apns_when`, ... (see the
     * hub's README); the full reply is then in lastReply().
     *
     * @param array<string,mixed> $options
     * @return int connections that took the message (`delivered`)
     */
    public function push(string|int|array $uid, mixed $data, array $options = []): int
    {
        return $this->one($this->preparePush($uid, $data, $options));
    }

    /**
     * Several pushes, pipelined. Each item is [$uid, $data] or
     * ['uid' => ..., 'data' => ..., ...more fields of the command].
     *
     * @param iterable<array<mixed>> $pushes
     * @return list<int> `delivered` of each, in order
     */
    public function pushMany(iterable $pushes): array
    {
        $requests = [];
        foreach ($pushes as $push) {
            if (!is_array($push)) {
                throw new \InvalidArgumentException('pushhub pushMany: each push is [$uid, $data] or [\'uid\' => ..., \'data\' => ...]');
            }
            if (array_is_list($push) && count($push) === 2) {
                $requests[] = $this->preparePush($push[0], $push[1], []);
                continue;
            }
            if (!array_key_exists('data', $push) || (!isset($push['uid']) && !isset($push['uids']))) {
                throw new \InvalidArgumentException('pushhub pushMany: a push needs `uid` (or `uids`) and `data`');
            }
            $uid = $push['uid'] ?? $push['uids'];
            $data = $push['data'];
            unset($push['uid'], $push['uids'], $push['data'], $push['cmd']);
            $requests[] = $this->preparePush($uid, $data, $push);
        }
        return $this->many($requests);
    }

    /**
     * The Workerman original's request: the line, as json_encode writes it,
     * goes to every connection of `uid` exactly as sent.
     *
     * @param array<string,mixed> $line e.g. ['uid' => 'uid1', 'percent' => '88%']; no `cmd` key
     * @return bool true for `ok` (a connection took it), false for `fail`
     *              (offline, or no usable `uid` in the line)
     */
    public function pushLine(array $line): bool
    {
        return $this->one($this->preparePushLine($line));
    }

    /**
     * Several original-form lines, pipelined.
     *
     * @param iterable<array<string,mixed>> $lines
     * @return list<bool>
     */
    public function pushLines(iterable $lines): array
    {
        $requests = [];
        foreach ($lines as $line) {
            $requests[] = $this->preparePushLine($line);
        }
        return $this->many($requests);
    }

    /**
     * `push` with `conn`: to one connection, by the id a listen() event gave.
     * With $binary, $data is a string of bytes sent as a binary message.
     */
    public function pushConn(string $conn, mixed $data, bool $binary = false): int
    {
        return $this->one($this->preparePushConn($conn, $data, $binary));
    }

    /** `broadcast`: to every live connection. Returns `delivered`. */
    public function broadcast(mixed $data): int
    {
        return $this->one($this->prepareBroadcast($data));
    }

    /** `publish`: to every subscriber of the channel (or of each channel of an array). Returns `delivered`. */
    public function publish(string|array $ch, mixed $data): int
    {
        return $this->one($this->preparePublish($ch, $data));
    }

    /**
     * `subscribe`: subscribes the uid's (or uids') current connections to
     * the channel(s), whatever their grants. Connections opened later are
     * not subscribed. Refusals (limits) are in lastReply()['refused'].
     *
     * @return int connections newly subscribed (`subscribed`)
     */
    public function subscribe(string|int|array $uid, string|array $ch): int
    {
        return $this->one($this->prepareSubscribe($uid, $ch));
    }

    /** `unsubscribe`: the reverse of subscribe(). Returns connections unsubscribed. */
    public function unsubscribe(string|int|array $uid, string|array $ch): int
    {
        return $this->one($this->prepareUnsubscribe($uid, $ch));
    }

    /** `online`: whether the uid has a connection now. */
    public function online(string|int $uid): bool
    {
        return $this->one($this->prepareOnline($uid));
    }

    /** `online`: how many connections the uid has now (0 when offline). */
    public function connections(string|int $uid): int
    {
        return $this->one($this->prepareConnections($uid));
    }

    /**
     * `online` with `uids`: one entry per uid, in order, as the hub gives it.
     *
     * @param list<string|int> $uids
     * @return list<array{uid:string,online:bool,connections:int}>
     */
    public function onlineMany(array $uids): array
    {
        return $this->one($this->prepareOnlineMany($uids));
    }

    /** `kick`: closes every connection of the uid(s) with code 4000. Returns `kicked`. */
    public function kick(string|int|array $uid): int
    {
        return $this->one($this->prepareKick($uid));
    }

    /**
     * `stats`: the hub's counters (`connections`, `pushes`, ...), without
     * `ok`. With $cluster (a hub in a cluster), every hub's, under `nodes`.
     *
     * @return array<string,mixed>
     */
    public function stats(bool $cluster = false): array
    {
        return $this->one($this->prepareStats($cluster));
    }

    /**
     * `channels`: the channels that have subscribers, with their connection
     * counts, as the hub gives them.
     *
     * @return list<array{ch:string,connections:int}>
     */
    public function channels(string $prefix = ''): array
    {
        return $this->one($this->prepareChannels($prefix));
    }

    /**
     * `members`: one channel's distinct uids (sorted) and its connections.
     *
     * @return array{uids:list<string>,connections:int}
     */
    public function members(string $ch): array
    {
        return $this->one($this->prepareMembers($ch));
    }

    /**
     * `register`: records a device for the uid (the hub needs --devices-db).
     *
     * @param string $kind `apns` (a hex device token), `fcm` (a registration
     *                     token) or `webpush` (PushSubscription.toJSON(), as an
     *                     array or as its JSON text)
     * @return array{registered:string,from?:string} `registered` is new, unchanged or moved (then `from`)
     */
    public function register(string|int $uid, string $kind, string|array $device): array
    {
        return $this->one($this->prepareRegister($uid, $kind, $device));
    }

    /**
     * `unregister`: forgets one device of the uid, or (with no device) all of them.
     * A webpush subscription is found by its endpoint.
     *
     * @return int devices removed
     */
    public function unregister(string|int $uid, ?string $kind = null, string|array|null $device = null): int
    {
        return $this->one($this->prepareUnregister($uid, $kind, $device));
    }

    /**
     * `devices`: the uid's devices by kind, each oldest first.
     *
     * @return array{apns:list<string>,fcm:list<string>,webpush:list<array<string,mixed>>}
     */
    public function devices(string|int $uid): array
    {
        return $this->one($this->prepareDevices($uid));
    }

    /** `vapid_key`: the Web Push public key (base64url) pages subscribe with. */
    public function vapidKey(): string
    {
        return $this->one($this->prepareVapidKey());
    }

    /**
     * Any request, as an array. With a `cmd`, returns the hub's reply
     * decoded (with `ok`); without one (the original form), true for `ok`
     * and false for `fail`.
     *
     * @param array<string,mixed> $cmd
     * @return array<string,mixed>|bool
     */
    public function command(array $cmd): array|bool
    {
        return $this->one($this->prepareCommand($cmd));
    }

    /**
     * Several requests (arrays, as for command()), pipelined.
     *
     * @param iterable<array<string,mixed>> $cmds
     * @return list<array<string,mixed>|bool>
     */
    public function commands(iterable $cmds): array
    {
        $requests = [];
        foreach ($cmds as $cmd) {
            $requests[] = $this->prepareCommand($cmd);
        }
        return $this->many($requests);
    }

    /**
     * Runs $build with a Pipeline, then sends everything it queued at once
     * and returns the results in order:
     *
     *     [$n, $online] = $client->pipeline(fn (Pipeline $p) => $p->push('u1', 'hi')->online('u2'));
     *
     * @param callable(Pipeline): mixed $build
     * @return list<mixed>
     */
    public function pipeline(callable $build): array
    {
        $pipeline = $this->batch();
        $build($pipeline);
        return $pipeline->execute();
    }

    /** An empty Pipeline on this connection; queue requests on it, then execute(). */
    public function batch(): Pipeline
    {
        return new Pipeline(
            fn (string $method, array $args): array => $this->prepare($method, $args),
            fn (array $requests): array => $this->many($requests),
        );
    }

    /**
     * `listen`: from now on this connection also receives client events
     * (`message`, `connect`, `disconnect`). They are kept as they arrive,
     * between answers; read them with nextEvent(). Listening ends with the
     * connection (close(), or a failure), so give it a client of its own.
     *
     * @param list<string> $events
     */
    public function listen(array $events = ['message']): bool
    {
        return $this->one($this->prepareCommandSpec(['cmd' => 'listen', 'events' => array_values($events)], static fn (array $r): bool => self::field($r, 'listening', 'bool')));
    }

    /**
     * The next client event (after listen()), waiting at most $timeout
     * seconds (the client's timeout by default); null if none came.
     *
     * @return array<string,mixed>|null e.g. ['event' => 'message', 'uid' => 'u1', 'conn' => '8589934601', 'd' => ...]
     */
    public function nextEvent(?float $timeout = null): ?array
    {
        if ($this->events !== []) {
            return array_shift($this->events);
        }
        if ($this->socket === null) {
            return null;
        }
        $this->exchange([], $timeout ?? $this->timeout, true);
        return $this->events === [] ? null : array_shift($this->events);
    }

    // ------------------------------------------------------------------
    // Tokens.

    /**
     * An HS256 token (JWT) for $uid, as the hub verifies it: header
     * {"alg":"HS256","typ":"JWT"}, claims `sub` (the uid, a string), `exp`
     * (now + $ttl, Unix seconds), then $claims: `nbf`, and the v1 grants
     * `channels` and `publish` (lists of patterns such as "room:*") and
     * `subs` (channels subscribed on connect); an `exp` there replaces the
     * computed one. The secret is the hub's, with surrounding whitespace
     * trimmed as the hub trims its secret file.
     *
     * @param array<string,mixed> $claims
     */
    public static function token(string $uid, string $secret, int $ttl = 3600, array $claims = []): string
    {
        self::checkUid($uid);
        $key = trim($secret, " \t\n\r\x0C");
        if ($key === '') {
            throw new \InvalidArgumentException('pushhub token: the secret is empty');
        }
        if ($ttl <= 0 && !isset($claims['exp'])) {
            throw new \InvalidArgumentException('pushhub token: the ttl must be at least 1 second (the hub refuses expired tokens)');
        }
        if (array_key_exists('sub', $claims)) {
            throw new \InvalidArgumentException('pushhub token: give the uid as $uid, not as a `sub` claim');
        }
        foreach (['channels', 'publish', 'subs'] as $grant) {
            if (isset($claims[$grant])
                && (!is_array($claims[$grant]) || !array_is_list($claims[$grant])
                    || array_filter($claims[$grant], 'is_string') !== $claims[$grant])) {
                throw new \InvalidArgumentException("pushhub token: the `$grant` claim must be a list of strings");
            }
        }
        $payload = ['sub' => $uid, 'exp' => time() + $ttl];
        foreach ($claims as $name => $value) {
            $payload[$name] = $value;
        }
        $b64 = static fn (string $s): string => rtrim(strtr(base64_encode($s), '+/', '-_'), '=');
        $signed = $b64('{"alg":"HS256","typ":"JWT"}') . '.' . $b64(self::json($payload, 'token'));
        return $signed . '.' . $b64(hash_hmac('sha256', $signed, $key, true));
    }

    // ------------------------------------------------------------------
    // Requests: each prepare* returns [line, cmd, decode], decode taking the
    // reply (an array for a command, a bool for the original form).

    /**
     * @param array<mixed> $args
     * @return array{0:string,1:?string,2:\Closure,3:float}
     */
    private function prepare(string $method, array $args): array
    {
        if (!in_array($method, self::BATCHABLE, true)) {
            throw new \BadMethodCallException("pushhub: a pipeline has no method `$method`");
        }
        $prepare = 'prepare' . ucfirst($method);
        return $this->$prepare(...$args);
    }

    private function preparePush(string|int|array $uid, mixed $data, array $options = []): array
    {
        unset($options['cmd'], $options['uid'], $options['uids'], $options['data']);
        return $this->prepareCommandSpec(
            ['cmd' => 'push'] + self::targets($uid, 'push') + ['data' => $data] + $options,
            static fn (array $r): int => self::field($r, 'delivered', 'int'),
            self::seconds($options['ack_timeout'] ?? null),
        );
    }

    private function preparePushLine(array $line): array
    {
        if (array_key_exists('cmd', $line)) {
            throw new \InvalidArgumentException(
                'pushhub pushLine: a line with a `cmd` field is read as a command; rename the field or use push()'
            );
        }
        return [self::json((object) $line, 'pushLine'), null, static fn (bool $ok): bool => $ok, 0.0];
    }

    private function preparePushConn(string $conn, mixed $data, bool $binary = false): array
    {
        $cmd = ['cmd' => 'push', 'conn' => $conn];
        if ($binary) {
            if (!is_string($data)) {
                throw new \InvalidArgumentException('pushhub pushConn: binary data must be a string of bytes');
            }
            $cmd += ['data' => base64_encode($data), 'binary' => true];
        } else {
            $cmd['data'] = $data;
        }
        return $this->prepareCommandSpec($cmd, static fn (array $r): int => self::field($r, 'delivered', 'int'));
    }

    private function prepareBroadcast(mixed $data): array
    {
        return $this->prepareCommandSpec(['cmd' => 'broadcast', 'data' => $data], static fn (array $r): int => self::field($r, 'delivered', 'int'));
    }

    private function preparePublish(string|array $ch, mixed $data): array
    {
        return $this->prepareCommandSpec(['cmd' => 'publish'] + self::chs($ch, 'publish') + ['data' => $data], static fn (array $r): int => self::field($r, 'delivered', 'int'));
    }

    private function prepareSubscribe(string|int|array $uid, string|array $ch): array
    {
        return $this->prepareCommandSpec(['cmd' => 'subscribe'] + self::targets($uid, 'subscribe') + self::chs($ch, 'subscribe'), static fn (array $r): int => self::field($r, 'subscribed', 'int'));
    }

    private function prepareUnsubscribe(string|int|array $uid, string|array $ch): array
    {
        return $this->prepareCommandSpec(['cmd' => 'unsubscribe'] + self::targets($uid, 'unsubscribe') + self::chs($ch, 'unsubscribe'), static fn (array $r): int => self::field($r, 'unsubscribed', 'int'));
    }

    private function prepareOnline(string|int $uid): array
    {
        return $this->prepareCommandSpec(['cmd' => 'online', 'uid' => $uid], static fn (array $r): bool => self::field($r, 'online', 'bool'));
    }

    private function prepareConnections(string|int $uid): array
    {
        return $this->prepareCommandSpec(['cmd' => 'online', 'uid' => $uid], static fn (array $r): int => self::field($r, 'connections', 'int'));
    }

    private function prepareOnlineMany(array $uids): array
    {
        return $this->prepareCommandSpec(['cmd' => 'online', 'uids' => self::uidList($uids, 'online')], static fn (array $r): array => self::field($r, 'results', 'array'));
    }

    private function prepareKick(string|int|array $uid): array
    {
        return $this->prepareCommandSpec(['cmd' => 'kick'] + self::targets($uid, 'kick'), static fn (array $r): int => self::field($r, 'kicked', 'int'));
    }

    private function prepareStats(bool $cluster = false): array
    {
        $cmd = $cluster ? ['cmd' => 'stats', 'cluster' => true] : ['cmd' => 'stats'];
        return $this->prepareCommandSpec($cmd, static fn (array $r): array => self::body($r));
    }

    private function prepareChannels(string $prefix = ''): array
    {
        $cmd = $prefix === '' ? ['cmd' => 'channels'] : ['cmd' => 'channels', 'prefix' => $prefix];
        return $this->prepareCommandSpec($cmd, static fn (array $r): array => self::field($r, 'channels', 'array'));
    }

    private function prepareMembers(string $ch): array
    {
        return $this->prepareCommandSpec(['cmd' => 'members', 'ch' => $ch], static fn (array $r): array => [
            'uids' => self::field($r, 'uids', 'array'),
            'connections' => self::field($r, 'connections', 'int'),
        ]);
    }

    private function prepareRegister(string|int $uid, string $kind, string|array $device): array
    {
        return $this->prepareCommandSpec(['cmd' => 'register', 'uid' => $uid] + self::device($kind, $device, 'register'), static function (array $r): array {
            self::field($r, 'registered', 'string');
            return self::body($r);
        });
    }

    private function prepareUnregister(string|int $uid, ?string $kind = null, string|array|null $device = null): array
    {
        if (($kind === null) !== ($device === null)) {
            throw new \InvalidArgumentException('pushhub unregister: give both the kind and the device, or neither (all of the uid\'s devices)');
        }
        $cmd = ['cmd' => 'unregister', 'uid' => $uid];
        if ($kind !== null) {
            $cmd += self::device($kind, $device, 'unregister');
        }
        return $this->prepareCommandSpec($cmd, static fn (array $r): int => self::field($r, 'removed', 'int'));
    }

    private function prepareDevices(string|int $uid): array
    {
        return $this->prepareCommandSpec(['cmd' => 'devices', 'uid' => $uid], static fn (array $r): array => [
            'apns' => self::field($r, 'apns', 'array'),
            'fcm' => self::field($r, 'fcm', 'array'),
            'webpush' => self::field($r, 'webpush', 'array'),
        ]);
    }

    private function prepareVapidKey(): array
    {
        return $this->prepareCommandSpec(['cmd' => 'vapid_key'], static fn (array $r): string => self::field($r, 'key', 'string'));
    }

    private function prepareCommand(array $cmd): array
    {
        if (!array_key_exists('cmd', $cmd)) {
            return $this->preparePushLine($cmd);
        }
        return $this->prepareCommandSpec($cmd, static fn (array $r): array => $r, self::seconds($cmd['ack_timeout'] ?? null));
    }

    /**
     * @param array<string,mixed> $cmd
     * @param float $wait seconds the hub holds this answer on purpose (`ack_timeout`),
     *                    allowed on top of the timeout
     * @return array{0:string,1:?string,2:\Closure,3:float}
     */
    private function prepareCommandSpec(array $cmd, \Closure $decode, float $wait = 0.0): array
    {
        $name = is_string($cmd['cmd'] ?? null) ? $cmd['cmd'] : 'command';
        return [self::json((object) $cmd, $name), $name, $decode, $wait];
    }

    /** An `ack_timeout` as the hub reads it ("5s", "500ms", "2m", or seconds as a number), in seconds; 0 if none. */
    private static function seconds(mixed $duration): float
    {
        if (is_int($duration) || is_float($duration)) {
            return max(0.0, (float) $duration);
        }
        if (is_string($duration) && preg_match('/^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?\s*$/', $duration, $m)) {
            return (float) $m[1] * ['ms' => 0.001, 's' => 1, 'm' => 60, 'h' => 3600][$m[2] ?? 's'];
        }
        return 0.0;
    }

    // ------------------------------------------------------------------
    // Argument shapes.

    /** @return array{uid:string|int}|array{uids:list<string|int>} */
    private static function targets(string|int|array $uid, string $cmd): array
    {
        return is_array($uid) ? ['uids' => self::uidList($uid, $cmd)] : ['uid' => $uid];
    }

    /** @return list<string|int> */
    private static function uidList(array $uids, string $cmd): array
    {
        foreach ($uids as $uid) {
            if (!is_string($uid) && !is_int($uid)) {
                throw new \InvalidArgumentException("pushhub $cmd: each uid must be a string or an int");
            }
        }
        return array_values($uids);
    }

    /** @return array{ch:string}|array{chs:list<string>} */
    private static function chs(string|array $ch, string $cmd): array
    {
        if (is_string($ch)) {
            return ['ch' => $ch];
        }
        foreach ($ch as $one) {
            if (!is_string($one)) {
                throw new \InvalidArgumentException("pushhub $cmd: each channel must be a string");
            }
        }
        return ['chs' => array_values($ch)];
    }

    /** @return array<string,mixed> */
    private static function device(string $kind, string|array $device, string $cmd): array
    {
        switch ($kind) {
            case 'apns':
            case 'fcm':
                if (!is_string($device)) {
                    throw new \InvalidArgumentException("pushhub $cmd: an $kind device is a token string");
                }
                return [$kind => $device];
            case 'webpush':
                if (is_string($device)) {
                    try {
                        $device = json_decode($device, true, 64, JSON_THROW_ON_ERROR);
                    } catch (\JsonException $e) {
                        throw new \InvalidArgumentException("pushhub $cmd: a webpush subscription is PushSubscription.toJSON(), as an array or its JSON text", 0, $e);
                    }
                    if (!is_array($device)) {
                        throw new \InvalidArgumentException("pushhub $cmd: a webpush subscription is a JSON object");
                    }
                }
                return ['webpush' => (object) $device];
            default:
                throw new \InvalidArgumentException("pushhub $cmd: the device kind is apns, fcm or webpush, not `$kind`");
        }
    }

    private static function checkUid(string $uid): void
    {
        // As the hub's valid_uid(): UTF-8, 1 to 256 bytes, no control character (Unicode Cc).
        if ($uid === '' || strlen($uid) > self::MAX_UID_BYTES || preg_match('/[\x{0}-\x{1f}\x{7f}-\x{9f}]/u', $uid) !== 0) {
            throw new \InvalidArgumentException('pushhub: a uid is 1 to 256 bytes of UTF-8 without control characters');
        }
    }

    private static function json(mixed $value, string $cmd): string
    {
        try {
            return json_encode($value, self::JSON_FLAGS);
        } catch (\JsonException $e) {
            throw new \InvalidArgumentException("pushhub $cmd: the request cannot be written as JSON: " . $e->getMessage(), 0, $e);
        }
    }

    // ------------------------------------------------------------------
    // Replies.

    /** @param array<string,mixed> $reply */
    private static function field(array $reply, string $name, string $type): mixed
    {
        $value = $reply[$name] ?? null;
        $fits = match ($type) {
            'int' => is_int($value),
            'bool' => is_bool($value),
            'string' => is_string($value),
            'array' => is_array($value),
        };
        if (!$fits) {
            throw new ProtocolException(sprintf('pushhub: the reply has no %s `%s`', $type, $name), self::cut(self::json($reply, 'reply')));
        }
        return $value;
    }

    /** @param array<string,mixed> $reply */
    private static function body(array $reply): array
    {
        unset($reply['ok'], $reply['id']);
        return $reply;
    }

    private static function cut(string $line): string
    {
        return strlen($line) > 200 ? substr($line, 0, 200) . '...' : $line;
    }

    /**
     * Turns one answer line into the reply its request expects: a bool for
     * the original form, the decoded object for a command. Event lines are
     * sorted out before this.
     *
     * @return array<string,mixed>|bool
     */
    private static function parse(string $line, ?string $cmd): array|bool
    {
        if ($cmd === null && ($line === 'ok' || $line === 'fail')) {
            return $line === 'ok';
        }
        $reply = json_decode($line, true, 512, JSON_BIGINT_AS_STRING);
        if (!is_array($reply) || array_is_list($reply) || !is_bool($reply['ok'] ?? null)) {
            throw new ProtocolException(
                sprintf('pushhub %s: not an answer of the text port: `%s`', $cmd ?? 'pushLine', self::cut($line)),
                self::cut($line),
            );
        }
        if ($reply['ok'] === false) {
            $error = $reply['error'] ?? null;
            self::failure(is_string($error) ? $error : '(no error text)', $cmd, $reply);
        }
        if ($cmd === null) {
            throw new ProtocolException('pushhub pushLine: the original form is answered ok or fail, not `' . self::cut($line) . '`', self::cut($line));
        }
        return $reply;
    }

    /** @param array<string,mixed> $reply */
    private static function failure(string $error, ?string $cmd, array $reply): never
    {
        throw new CommandException($error, $cmd, $reply);
    }

    /** Decodes one answer for its request. */
    private static function decode(string $line, array $request): mixed
    {
        [, $cmd, $decode] = $request;
        return $decode(self::parse($line, $cmd));
    }

    /** @param array{0:string,1:?string,2:\Closure,3:float} $request */
    private function one(array $request): mixed
    {
        [$line] = $this->exchange([$request[0]], $this->timeout + $request[3], false);
        try {
            $result = self::decode($line, $request);
        } catch (ProtocolException $e) {
            $this->close();
            throw $e;
        } catch (CommandException $e) {
            $this->closeIfClosing($e);
            throw $e;
        }
        $this->lastReply = $request[1] === null ? $result : self::parse($line, $request[1]);
        return $result;
    }

    /**
     * @param list<array{0:string,1:?string,2:\Closure,3:float}> $requests
     * @return list<mixed>
     */
    private function many(array $requests): array
    {
        if ($requests === []) {
            return [];
        }
        $lines = $this->exchange(array_column($requests, 0), $this->timeout + max(array_column($requests, 3)), false);
        $results = [];
        $failed = null;
        foreach ($lines as $i => $line) {
            try {
                $results[] = self::decode($line, $requests[$i]);
            } catch (CommandException $e) {
                $this->closeIfClosing($e);
                $results[] = $e;
                $failed ??= $i;
            } catch (ProtocolException $e) {
                $this->close();
                throw $e;
            }
        }
        if ($failed !== null) {
            $first = $results[$failed];
            foreach ($results as $i => $result) {
                if ($result instanceof CommandException) {
                    $result->withBatch($results, $i);
                }
            }
            throw $first;
        }
        return $results;
    }

    // ------------------------------------------------------------------
    // The connection.

    /**
     * After an over-long line the hub answers its error and closes the
     * connection: close it here too, so that the next call opens a new one
     * instead of writing into a connection being closed. (The error text is
     * the only sign the wire gives.)
     */
    private function closeIfClosing(CommandException $e): void
    {
        if (str_starts_with($e->getError(), 'line longer than ')) {
            $this->close();
        }
    }

    private function connect(): void
    {
        $context = stream_context_create(['socket' => ['tcp_nodelay' => true]]);
        $errno = 0;
        $errstr = '';
        $socket = @stream_socket_client('tcp://' . $this->address, $errno, $errstr, $this->timeout, STREAM_CLIENT_CONNECT, $context);
        if ($socket === false) {
            $refused = $errno === 111 || $errno === 61 || $errno === 10061 || stripos($errstr, 'refused') !== false;
            $why = $errstr !== '' ? $errstr : ($errno === 0 ? 'timed out or no address' : "error $errno");
            throw new ConnectionException(
                sprintf('pushhub: cannot connect to the text port at %s: %s', $this->address, $refused ? 'connection refused' : $why),
                $refused ? ConnectionException::REFUSED : ConnectionException::CONNECT_FAILED,
                $this->address,
            );
        }
        stream_set_blocking($socket, false);
        stream_set_read_buffer($socket, 0);
        stream_set_write_buffer($socket, 0);
        $this->socket = $socket;
        $this->buffer = '';
    }

    /**
     * Before a request on a connection that has been idle: if the hub
     * closed it meanwhile (a restart, an over-long line), open a new one,
     * since nothing of the new request has been sent yet. A line that is not
     * an event means the stream is not what we think it is.
     */
    private function ensureConnected(): void
    {
        if ($this->socket !== null) {
            $read = [$this->socket];
            $write = $except = null;
            if (@stream_select($read, $write, $except, 0) > 0) {
                $chunk = @fread($this->socket, 65536);
                if ($chunk === false || $chunk === '') {
                    $this->close();
                } else {
                    $this->buffer .= $chunk;
                    $this->takeEvents();
                }
            }
        }
        if ($this->socket === null) {
            $this->connect();
        }
    }

    /** Moves the complete lines of the buffer, all of which must be events, to the event queue. */
    private function takeEvents(): void
    {
        while (($end = strpos($this->buffer, "\n")) !== false) {
            $line = substr($this->buffer, 0, $end);
            $this->buffer = substr($this->buffer, $end + 1);
            $event = self::event($line);
            if ($event === null) {
                $this->close();
                throw new ProtocolException('pushhub: the hub sent a line when nothing was asked: `' . self::cut($line) . '`', self::cut($line));
            }
            $this->events[] = $event;
        }
    }

    /** @return array<string,mixed>|null the event an event line holds; null for any other line */
    private static function event(string $line): ?array
    {
        if (!str_starts_with($line, '{"event"')) {
            return null;
        }
        $event = json_decode($line, true, 512, JSON_BIGINT_AS_STRING);
        return is_array($event) && is_string($event['event'] ?? null) && !isset($event['ok']) ? $event : null;
    }

    /**
     * Writes $lines and reads as many answer lines, both at once (the hub may
     * answer the first lines before it has read the last ones, and stops
     * reading when its answers are not read). $timeout bounds the silence:
     * each byte written or read restarts it. With $forEvent, writes nothing
     * and returns once one event line came (or at the timeout, quietly).
     *
     * @param list<string> $lines
     * @return list<string>
     */
    private function exchange(array $lines, float $timeout, bool $forEvent): array
    {
        // A refused connect or a broken pipe is a warning in PHP as well as a
        // return value: keep it from the application's error handler (which
        // may turn warnings into exceptions even under @), since the
        // ConnectionException says it all.
        set_error_handler(static fn (): bool => true);
        try {
            return $this->transfer($lines, $timeout, $forEvent);
        } finally {
            restore_error_handler();
        }
    }

    /**
     * exchange(), with PHP's warnings silenced.
     *
     * @param list<string> $lines
     * @return list<string>
     */
    private function transfer(array $lines, float $timeout, bool $forEvent): array
    {
        if (!$forEvent) {
            $this->ensureConnected();
        }
        $socket = $this->socket;
        $want = count($lines);
        $out = $want > 0 ? implode("\n", $lines) . "\n" : '';
        $written = 0;
        $total = strlen($out);
        $answers = [];
        $eventsBefore = count($this->events);
        $last = microtime(true);
        $offset = 0;
        while (true) {
            // Whole lines first: answers in order, events aside.
            while (($end = strpos($this->buffer, "\n", $offset)) !== false) {
                $line = substr($this->buffer, $offset, $end - $offset);
                $offset = $end + 1;
                $event = self::event($line);
                if ($event !== null) {
                    $this->events[] = $event;
                } elseif (count($answers) < $want) {
                    $answers[] = $line;
                } else {
                    $this->buffer = substr($this->buffer, $offset);
                    $this->close();
                    throw new ProtocolException('pushhub: the hub sent a line when nothing was asked: `' . self::cut($line) . '`', self::cut($line));
                }
            }
            if ($offset > 0) {
                $this->buffer = substr($this->buffer, $offset);
                $offset = 0;
            }
            if ($forEvent ? count($this->events) > $eventsBefore : (count($answers) === $want && $written === $total)) {
                return $answers;
            }

            $left = $timeout - (microtime(true) - $last);
            if ($left <= 0) {
                if ($forEvent) {
                    return [];
                }
                $this->close();
                $unanswered = $want - count($answers);
                throw new ConnectionException(
                    sprintf(
                        'pushhub: timeout: no answer from the text port at %s for %.3gs (%d of %d answers came); the connection is closed, and the %s not sent again',
                        $this->address, $timeout, count($answers), $want,
                        $unanswered === 1 ? 'request may have been carried out but is' : 'unanswered requests may have been carried out but are',
                    ),
                    ConnectionException::TIMEOUT, $this->address, $unanswered, count($answers),
                );
            }
            $read = [$socket];
            $write = $written < $total ? [$socket] : null;
            $except = null;
            $seconds = (int) $left;
            $ready = @stream_select($read, $write, $except, $seconds, min(999_999, (int) (($left - $seconds) * 1e6) + 1));
            if ($ready === false) {
                // Interrupted (a signal): the loop looks at the clock again.
                continue;
            }
            if ($write) {
                $n = @fwrite($socket, $out);
                if ($n === false) {
                    $this->lost($want, count($answers), 'while the requests were being sent');
                }
                if ($n > 0) {
                    $written += $n;
                    $out = substr($out, $n);
                    $last = microtime(true);
                }
            }
            if ($read) {
                $chunk = @fread($socket, 1 << 16);
                if ($chunk === false || ($chunk === '' && feof($socket))) {
                    if ($forEvent) {
                        $this->close();
                        return [];
                    }
                    $this->lost($want, count($answers), 'before it answered');
                }
                if ($chunk !== '') {
                    $this->buffer .= $chunk;
                    $last = microtime(true);
                    if (strlen($this->buffer) > self::MAX_ANSWER_BYTES && strpos($this->buffer, "\n") === false) {
                        $this->close();
                        throw new ProtocolException(sprintf('pushhub: an answer line longer than %d bytes from %s', self::MAX_ANSWER_BYTES, $this->address));
                    }
                }
            }
        }
    }

    private function lost(int $want, int $answered, string $when): never
    {
        $this->close();
        $unanswered = $want - $answered;
        throw new ConnectionException(
            sprintf(
                'pushhub: connection lost: the text port at %s closed the connection %s (%d of %d answers came); the %s not sent again',
                $this->address, $when, $answered, $want,
                $unanswered === 1 ? 'request may have been carried out but is' : 'unanswered requests may have been carried out but are',
            ),
            ConnectionException::LOST, $this->address, $unanswered, $answered,
        );
    }
}
