<?php

// The PHP client's tests, against real hubs: php clients/php/tests/run.php
// (from the repository root). The hub binary is $PUSHHUB_BIN, by default
// target/debug/pushhub. No PHPUnit, nothing downloaded: each test is a
// function that throws on failure. Exits 1 if any test failed.

declare(strict_types=1);

use Pushhub\Client;
use Pushhub\CommandException;
use Pushhub\ConnectionException;
use Pushhub\Pipeline;
use Pushhub\ProtocolException;
use Pushhub\Tests\WsClient;

require __DIR__ . '/../src/Client.php';
require __DIR__ . '/WsClient.php';

error_reporting(E_ALL);
// Every warning is a failure, even under @: the client must keep PHP's
// warnings about sockets (a refused connect, a broken pipe) to itself.
set_error_handler(static function (int $no, string $msg, string $file, int $line): bool {
    throw new ErrorException($msg, 0, $no, $file, $line);
});

$root = dirname(__DIR__, 3);
$bin = getenv('PUSHHUB_BIN') ?: 'target/debug/pushhub';
if (!str_starts_with($bin, '/')) {
    $bin = "$root/$bin";
}
if (!is_executable($bin)) {
    fwrite(STDERR, "no hub binary at $bin: build it (cargo build) or set PUSHHUB_BIN\n");
    exit(2);
}
$tmp = sys_get_temp_dir() . '/pushhub-php-' . getmypid();
mkdir($tmp, 0700);

// ----------------------------------------------------------------------
// Harness.

final class Failed extends Exception
{
}

function check(bool $ok, string $what): void
{
    if (!$ok) {
        throw new Failed($what);
    }
}

function same(mixed $want, mixed $got, string $what): void
{
    if ($want !== $got) {
        throw new Failed(sprintf('%s: want %s, got %s', $what, var_export($want, true), var_export($got, true)));
    }
}

/** Runs $fn and returns the exception of class $class it throws. */
function throws(string $class, callable $fn, string $what): Throwable
{
    try {
        $fn();
    } catch (Throwable $e) {
        if ($e instanceof $class) {
            return $e;
        }
        throw new Failed("$what: want $class, got " . get_class($e) . ': ' . $e->getMessage());
    }
    throw new Failed("$what: want $class, nothing thrown");
}

/** Every process started, by pid, stopped at the end whatever happens. */
final class Procs
{
    /** @var array<int, resource> */
    public static array $open = [];

    public static function stopAll(): void
    {
        foreach (self::$open as $pid => $proc) {
            self::stop($pid);
        }
    }

    public static function stop(int $pid, int $signal = 15): void
    {
        $proc = self::$open[$pid] ?? null;
        if ($proc === null) {
            return;
        }
        unset(self::$open[$pid]);
        if (proc_get_status($proc)['running']) {
            proc_terminate($proc, $signal);
            $deadline = microtime(true) + 3;
            while (proc_get_status($proc)['running'] && microtime(true) < $deadline) {
                usleep(10_000);
            }
            if (proc_get_status($proc)['running']) {
                proc_terminate($proc, 9);
            }
        }
        proc_close($proc);
    }
}

register_shutdown_function(static function () use ($tmp): void {
    Procs::stopAll();
    foreach (glob("$tmp/*") ?: [] as $file) {
        @unlink($file);
    }
    @rmdir($tmp);
});

final class Hub
{
    public int $pid;
    public string $ws;
    public string $text;

    /** @param list<string> $flags */
    public function __construct(string $bin, string $log, array $flags)
    {
        $cmd = array_merge([$bin, '--ws', '127.0.0.1:0', '--text', '127.0.0.1:0', '--metrics', 'off'], $flags);
        $proc = proc_open($cmd, [0 => ['file', '/dev/null', 'r'], 1 => ['file', '/dev/null', 'w'], 2 => ['file', $log, 'w']], $pipes);
        if ($proc === false) {
            throw new RuntimeException('cannot start ' . $bin);
        }
        $this->pid = proc_get_status($proc)['pid'];
        Procs::$open[$this->pid] = $proc;
        // The hub logs the addresses it bound (port 0: the kernel's choice).
        $deadline = microtime(true) + 5;
        while (true) {
            $text = (string) @file_get_contents($log);
            if (preg_match('~WebSocket on wss?://(\S+), text port on (\S+)~', $text, $m)) {
                [$this->ws, $this->text] = [$m[1], $m[2]];
                break;
            }
            if (!proc_get_status($proc)['running'] || microtime(true) > $deadline) {
                throw new RuntimeException("the hub did not start:\n$text");
            }
            usleep(5_000);
        }
        foreach ([$this->ws, $this->text] as $address) {
            $probe = @stream_socket_client("tcp://$address", $errno, $errstr, 2);
            check($probe !== false, "the hub accepts on $address");
            fclose($probe);
        }
    }

    public function stop(int $signal = 15): void
    {
        Procs::stop($this->pid, $signal);
    }
}

/** A FakeServer.php in $mode; returns [pid, address]. */
function fake(string $mode): array
{
    $proc = proc_open([PHP_BINARY, __DIR__ . '/FakeServer.php', $mode], [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['file', '/dev/null', 'w']], $pipes);
    $pid = proc_get_status($proc)['pid'];
    Procs::$open[$pid] = $proc;
    $address = trim((string) fgets($pipes[1]));
    check(preg_match('/^127\.0\.0\.1:\d+$/', $address) === 1, "the fake server's address, got `$address`");
    return [$pid, $address];
}

/** A loopback port nothing listens on: bound, then closed. */
function freePort(): string
{
    $server = stream_socket_server('tcp://127.0.0.1:0');
    $address = stream_socket_get_name($server, false);
    fclose($server);
    return $address;
}

/** A browser page logged in as $uid (plain-uid mode), once the hub says it is online. */
function page(Hub $hub, Client $client, string $uid): WsClient
{
    $before = $client->connections($uid);
    $ws = new WsClient($hub->ws);
    $ws->sendText($uid);
    $deadline = microtime(true) + 3;
    while ($client->connections($uid) <= $before) {
        check(microtime(true) < $deadline, "$uid comes online");
        usleep(2_000);
    }
    return $ws;
}

/** Waits (bounded) until $uid has $n connections. */
function waitConnections(Client $client, string $uid, int $n): void
{
    $deadline = microtime(true) + 3;
    while ($client->connections($uid) !== $n) {
        check(microtime(true) < $deadline, "$uid has $n connections");
        usleep(2_000);
    }
}

function timed(callable $fn): float
{
    $start = microtime(true);
    $fn();
    return microtime(true) - $start;
}

// ----------------------------------------------------------------------
// Hubs: a plain-uid hub with the device registry, a VAPID key and
// upstream messages; a token-mode hub; a small one to cut off.

$started = microtime(true);
$vapidPem = "$tmp/vapid.pem";
$vapidPublic = trim((string) shell_exec(escapeshellarg($bin) . ' vapid-keygen ' . escapeshellarg($vapidPem) . ' 2>/dev/null'));
$main = new Hub($bin, "$tmp/main.log", [
    '--allow-plain-uid', '--upstream', '--devices-db', "$tmp/devices.sqlite3",
    '--vapid-key-file', $vapidPem, '--vapid-subject', 'mailto:test@example.com',
]);
$secret = 'test-secret-' . bin2hex(random_bytes(16));
file_put_contents("$tmp/secret", "$secret\n");
$tokenHub = new Hub($bin, "$tmp/token.log", ['--secret-file', "$tmp/secret"]);
$c = new Client($main->text, 3.0);

$tests = [];

$tests['push: delivered count, and the page receives the data'] = function () use ($main, $c): void {
    $a = page($main, $c, 'p1');
    $b = page($main, $c, 'p1');
    same(2, $c->push('p1', 'hello'), 'delivered to both pages of p1');
    same('hello', $a->readText(), 'a string arrives as its contents');
    same('hello', $b->readText(), 'on every page');
    same(2, $c->push('p1', ['a' => [1, 2], 'url' => 'http://x/é']), 'an object');
    same('{"a":[1,2],"url":"http://x/é"}', $a->readText(), 'an object arrives as its JSON text');
    same(0, $c->push('nobody', 'x'), 'a uid nobody is connected as');
    $other = page($main, $c, 'p2');
    same(3, $c->push(['p1', 'p2', 'nobody'], 1.5), 'uids: every connection of each');
    same('1.5', $other->readText(), 'a number as its JSON text');
    same(true, $c->lastReply()['ok'] ?? null, 'lastReply() holds the reply');
};

$tests['pushLine: the original form, true for ok and false for fail'] = function () use ($main, $c): void {
    $ws = page($main, $c, 'legacy1');
    same(true, $c->pushLine(['uid' => 'legacy1', 'percent' => '88%']), 'ok for an online uid');
    same('{"uid":"legacy1","percent":"88%"}', $ws->readText(), 'the line arrives exactly as sent');
    same(false, $c->pushLine(['uid' => 'legacy2', 'percent' => '88%']), 'fail for an offline uid');
    same(false, $c->pushLine(['percent' => '88%']), 'fail without a uid');
    same(false, $c->pushLine([]), 'fail for an empty line');
    throws(InvalidArgumentException::class, fn () => $c->pushLine(['uid' => 'legacy1', 'cmd' => 'x']), 'a cmd field would make it a command');
    same([true, false, true], $c->pushLines([['uid' => 'legacy1', 'n' => 1], ['uid' => 'nobody'], ['uid' => 'legacy1', 'n' => 2]]), 'pushLines pipelined');
    same('{"uid":"legacy1","n":1}', $ws->readText(), 'first line');
    same('{"uid":"legacy1","n":2}', $ws->readText(), 'second line');
    same(true, $c->command(['uid' => 'legacy1', 'x' => 1]), 'command() without cmd is the original form');
};

$tests['broadcast'] = function () use ($main, $c): void {
    $a = page($main, $c, 'b1');
    $n = $c->stats()['authenticated'];
    same($n, $c->broadcast('to all'), 'delivered to every authenticated connection');
    // Drain other pages' copies is not needed: each test has its own pages.
    same('to all', $a->readText(), 'b1 got it');
};

$tests['subscribe, publish, channels, members, unsubscribe'] = function () use ($main, $c): void {
    $a = page($main, $c, 's1');
    $b = page($main, $c, 's2');
    same(1, $c->subscribe('s1', 'room:1'), 'one connection subscribed');
    same(4, $c->subscribe(['s1', 's2'], ['room:2', 'room:3']), 'uids and chs: a subscription per connection and channel');
    same(0, $c->subscribe('s1', 'room:1'), 'already subscribed');
    same(1, $c->publish('room:1', ['t' => 'hi']), 'publish to room:1');
    same('{"t":"hi"}', $a->readText(), 's1 got the publication');
    same(4, $c->publish(['room:2', 'room:3'], 'both'), 'publish to two channels: a connection per channel');
    same('both', $b->readText(), 's2 got it once per channel');
    same('both', $b->readText(), 's2 got it once per channel, twice');
    $rooms = $c->channels('room:');
    same([['ch' => 'room:1', 'connections' => 1], ['ch' => 'room:2', 'connections' => 2], ['ch' => 'room:3', 'connections' => 2]], $rooms, 'channels(prefix)');
    check(in_array(['ch' => 'room:1', 'connections' => 1], $c->channels(), true), 'channels() lists room:1');
    same(['uids' => ['s1', 's2'], 'connections' => 2], $c->members('room:2'), 'members');
    same(2, $c->unsubscribe(['s1', 's2'], 'room:2'), 'unsubscribed');
    same(0, $c->publish('room:2', 'nobody'), 'nobody left in room:2');
    same(['uids' => [], 'connections' => 0], $c->members('room:2'), 'members of an empty channel');
    $e = throws(CommandException::class, fn () => $c->publish('a b', 1), 'a bad channel name');
    check(str_starts_with($e->getError(), 'bad channel name'), 'the hub says why: ' . $e->getError());
    same('publish', $e->getCmd(), 'the exception names the command');
};

$tests['online, connections, onlineMany'] = function () use ($main, $c): void {
    same(false, $c->online('o1'), 'offline');
    same(0, $c->connections('o1'), 'no connection');
    $a = page($main, $c, 'o1');
    $b = page($main, $c, 'o1');
    same(true, $c->online('o1'), 'online');
    same(2, $c->connections('o1'), 'two connections');
    same([
        ['uid' => 'o1', 'online' => true, 'connections' => 2],
        ['uid' => 'nobody', 'online' => false, 'connections' => 0],
    ], $c->onlineMany(['o1', 'nobody']), 'onlineMany');
    $a->close();
    waitConnections($c, 'o1', 1);
};

$tests['kick: count, and the page is closed with 4000'] = function () use ($main, $c): void {
    $a = page($main, $c, 'k1');
    $b = page($main, $c, 'k1');
    same(2, $c->kick('k1'), 'kicked both');
    same(4000, $a->waitClose(), 'close code 4000');
    same(4000, $b->waitClose(), 'close code 4000 too');
    same(false, $c->online('k1'), 'offline at once');
    same(0, $c->kick(['k1', 'nobody']), 'nobody to kick');
};

$tests['stats'] = function () use ($c): void {
    $stats = $c->stats();
    foreach (['connections', 'authenticated', 'uids', 'pushes', 'broadcasts', 'delivered', 'kicked', 'uptime_secs'] as $field) {
        check(is_int($stats[$field] ?? null), "stats has $field");
    }
    check(!isset($stats['ok']), 'without ok');
    $pushes = $stats['pushes'];
    $c->push('nobody', 1);
    same($pushes + 1, $c->stats()['pushes'], 'pushes counted');
};

$tests['devices: register, devices, unregister; vapidKey'] = function () use ($c, $vapidPublic): void {
    $apns = str_repeat('740f4707bebcf74f', 4);
    $fcm = 'fcm-token:' . bin2hex(random_bytes(8));
    // RFC 8291's example subscription keys: a real P-256 point and a 16-byte secret.
    $sub = [
        'endpoint' => 'https://push.example.net/push/JzLQ3raZJfFBR0aqvOMsLrt54w4rJUsV',
        'expirationTime' => null,
        'keys' => ['p256dh' => 'BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4', 'auth' => 'BTBZMqHH6r4Tts7J_aSIgg'],
    ];
    same(['registered' => 'new'], $c->register('d1', 'apns', $apns), 'a new iPhone');
    same(['registered' => 'unchanged'], $c->register('d1', 'apns', $apns), 'the same again');
    same(['registered' => 'moved', 'from' => 'd1'], $c->register('d2', 'apns', $apns), 'moved to d2');
    same(['registered' => 'new'], $c->register('d2', 'fcm', $fcm), 'an Android app');
    same(['registered' => 'new'], $c->register('d2', 'webpush', json_encode($sub)), 'a browser, as JSON text');
    $devices = $c->devices('d2');
    same([$apns], $devices['apns'], 'apns listed');
    same([$fcm], $devices['fcm'], 'fcm listed');
    same($sub['endpoint'], $devices['webpush'][0]['endpoint'] ?? null, 'webpush listed');
    same(['apns' => [], 'fcm' => [], 'webpush' => []], $c->devices('d1'), 'd1 has none left');
    same(1, $c->unregister('d2', 'webpush', ['endpoint' => $sub['endpoint']] + $sub), 'one subscription removed');
    same(2, $c->unregister('d2'), 'the rest removed');
    same(0, $c->unregister('d2'), 'nothing left');
    $e = throws(CommandException::class, fn () => $c->register('d1', 'apns', 'abc'), 'a bad token');
    same('`apns`: an APNs device token is 64 to 200 hexadecimal digits', $e->getError(), "the hub's reason");
    throws(InvalidArgumentException::class, fn () => $c->register('d1', 'sms', 'x'), 'an unknown kind');
    check(strlen($vapidPublic) > 80, 'vapid-keygen printed a key');
    same($vapidPublic, $c->vapidKey(), 'vapidKey() is the key the hub was started with');
};

$tests['device commands and vapidKey on a hub without them: CommandException'] = function () use ($tokenHub): void {
    $t = new Client('tcp://' . $tokenHub->text, 2.0);
    $e = throws(CommandException::class, fn () => $t->devices('u1'), 'no registry');
    check(str_starts_with($e->getError(), 'no device registry'), $e->getError());
    $e = throws(CommandException::class, fn () => $t->vapidKey(), 'no VAPID key');
    check(str_starts_with($e->getError(), 'no VAPID key'), $e->getError());
    same(0, $t->push('u1', 'still usable'), 'the connection stays usable');
};

$tests['command, commands, pipeline, batch'] = function () use ($main, $c): void {
    $ws = page($main, $c, 'c1');
    $reply = $c->command(['cmd' => 'push', 'uid' => 'c1', 'data' => 'x', 'id' => 'r-17']);
    same(['ok' => true, 'id' => 'r-17', 'delivered' => 1], $reply, 'the reply as sent, id copied');
    $e = throws(CommandException::class, fn () => $c->command(['cmd' => 'explode', 'id' => 3]), 'an unknown command');
    same(3, $e->getId(), 'the id of the failed request');
    check(str_starts_with($e->getError(), 'unknown cmd `explode`'), $e->getError());
    same([['ok' => true, 'delivered' => 1], true], $c->commands([['cmd' => 'push', 'uid' => 'c1', 'data' => 'y'], ['uid' => 'c1']]), 'commands()');
    $results = $c->pipeline(function (Pipeline $p): void {
        $p->push('c1', 'z')->online('c1')->connections('c1')->publish('none', 1)->stats()->pushLine(['uid' => 'nobody']);
    });
    same([1, true, 1, 0], array_slice($results, 0, 4), 'pipeline results in order');
    check(is_array($results[4]) && isset($results[4]['pushes']), 'stats in a pipeline');
    same(false, $results[5], 'pushLine in a pipeline');
    $batch = $c->batch()->push('c1', 'w')->kick('nobody');
    same(2, count($batch), 'a batch counts its requests');
    same([1, 0], $batch->execute(), 'batch()->execute()');
    same([], $batch->execute(), 'an executed batch is empty');
    foreach (['x', 'y', '{"uid":"c1"}', 'z', 'w'] as $want) {
        same($want, $ws->readText(), 'the page got every push in order');
    }
    $e = throws(CommandException::class, fn () => $c->pipeline(fn (Pipeline $p) => $p->push('c1', 1)->publish('bad name', 1)->push('c1', 2)), 'a failed request in a pipeline');
    same(1, $e->getIndex(), 'which request failed');
    same(3, count($e->getResults()), 'every result');
    same(1, $e->getResults()[0], 'the first push went');
    same(1, $e->getResults()[2], 'the push after the failure went too');
    same('1', $ws->readText(), 'first');
    same('2', $ws->readText(), 'third');
    throws(BadMethodCallException::class, fn () => $c->batch()->close(), 'a pipeline only takes requests');
    throws(InvalidArgumentException::class, fn () => $c->push('c1', "\xff"), 'data that is not UTF-8');
    same(1, $c->push('c1', 'after'), 'nothing was sent by the refused call');
};

$tests['listen, nextEvent, pushConn'] = function () use ($main, $c): void {
    $l = new Client($main->text, 2.0);
    same(true, $l->listen(['message', 'connect', 'disconnect']), 'listening');
    $ws = page($main, $c, 'ev1');
    $event = $l->nextEvent(2.0);
    same('connect', $event['event'] ?? null, 'a connect event');
    same('ev1', $event['uid'], 'with the uid');
    $conn = $event['conn'];
    $ws->sendText('hello up');
    $event = $l->nextEvent(2.0);
    same(['event' => 'message', 'uid' => 'ev1', 'conn' => $conn, 'd' => 'hello up'], $event, 'the message event');
    same(1, $l->pushConn($conn, 'pong'), 'pushConn');
    same(['text', 'pong'], $ws->read(), 'the connection got it');
    same(1, $l->pushConn($conn, "\x00\xff\x01", true), 'pushConn binary');
    same(['binary', "\x00\xff\x01"], $ws->read(), 'as a binary message');
    same(null, $l->nextEvent(0.05), 'no event: null at the timeout');
    $ws->close();
    same('disconnect', $l->nextEvent(2.0)['event'] ?? null, 'a disconnect event');
    $l->close();
};

$tests['token(): accepted by a hub in token mode, refused with a wrong secret'] = function () use ($tokenHub, $secret): void {
    $t = new Client($tokenHub->text, 2.0);
    $token = Client::token('tok1', "  $secret\n");
    [$h, $p] = explode('.', $token);
    same(['alg' => 'HS256', 'typ' => 'JWT'], json_decode(base64_decode(strtr($h, '-_', '+/')), true), 'the header');
    $claims = json_decode(base64_decode(strtr($p, '-_', '+/')), true);
    same('tok1', $claims['sub'], 'sub is the uid');
    check(abs($claims['exp'] - (time() + 3600)) <= 1, 'exp is an hour from now');

    $ws = new WsClient($tokenHub->ws, '/?token=' . $token);
    same(true, $t->online('tok1'), 'bound during the handshake (?token=)');
    same(1, $t->push('tok1', 'signed'), 'delivered');
    same('signed', $ws->readText(), 'received');

    $first = new WsClient($tokenHub->ws);
    $first->sendText(Client::token('tok2', $secret, 60, ['channels' => ['room:*'], 'subs' => ['news']]));
    $deadline = microtime(true) + 3;
    while (!$t->online('tok2')) {
        check(microtime(true) < $deadline, 'tok2 comes online with the token as its first message');
        usleep(2_000);
    }
    same(['uids' => ['tok2'], 'connections' => 1], $t->members('news'), 'the subs grant subscribed it');

    $wrong = new WsClient($tokenHub->ws);
    $wrong->sendText(Client::token('tok3', $secret . 'x'));
    same(4001, $wrong->waitClose(), 'a wrong secret is refused with 4001');
    same('unauthorized: bad token signature', $wrong->closeReason, 'the reason');
    $expired = new WsClient($tokenHub->ws);
    $expired->sendText(Client::token('tok3', $secret, 60, ['exp' => time() - 1]));
    same(4001, $expired->waitClose(), 'an expired token is refused');
    same('unauthorized: token expired', $expired->closeReason, 'the reason');
    same(false, $t->online('tok3'), 'tok3 never came online');

    throws(InvalidArgumentException::class, fn () => Client::token('', $secret), 'an empty uid');
    throws(InvalidArgumentException::class, fn () => Client::token("a\nb", $secret), 'a control character');
    throws(InvalidArgumentException::class, fn () => Client::token('u', " \n"), 'an empty secret');
    throws(InvalidArgumentException::class, fn () => Client::token('u', $secret, 60, ['channels' => 'room:*']), 'a grant that is not a list');
};

$tests['pipelining 10,000 pushes: all answered, all received in order'] = function () use ($main, $c): void {
    $ws = page($main, $c, 'bulk');
    $n = 10_000;
    $pushes = [];
    for ($i = 0; $i < $n; $i++) {
        $pushes[] = ['bulk', "m$i"];
    }
    $answers = null;
    $elapsed = timed(function () use ($c, $pushes, &$answers): void {
        $answers = $c->pushMany($pushes);
    });
    same(array_fill(0, $n, 1), $answers, 'every push answered delivered 1');
    $received = 0;
    $start = microtime(true);
    for ($i = 0; $i < $n; $i++) {
        $got = $ws->readText(2.0);
        if ($got !== "m$i") {
            throw new Failed("message $i: want m$i, got " . var_export($got, true) . ($ws->closeCode ? " (closed {$ws->closeCode} {$ws->closeReason})" : ''));
        }
        $received++;
    }
    $total = $elapsed + (microtime(true) - $start);
    printf("      %d pushes pipelined: answered in %.1f ms (%s pushes/s); all received in order after %.1f ms\n",
        $n, $elapsed * 1e3, number_format($n / $elapsed), $total * 1e3);
    $lines = [];
    for ($i = 0; $i < $n; $i++) {
        $lines[] = ['uid' => 'bulk', 'i' => $i];
    }
    $elapsed = timed(function () use ($c, $lines, &$answers): void {
        $answers = $c->pushLines($lines);
    });
    same(array_fill(0, $n, true), $answers, 'every line answered ok');
    for ($i = 0; $i < $n; $i++) {
        same("{\"uid\":\"bulk\",\"i\":$i}", $ws->readText(2.0), "line $i");
    }
    printf("      %d original-form lines pipelined: answered in %.1f ms (%s lines/s)\n", $n, $elapsed * 1e3, number_format($n / $elapsed));
};

$tests['push with ack_timeout: the wait is allowed on top of the timeout'] = function () use ($main): void {
    $x = new Client($main->text, 0.3);
    $ws = page($main, $x, 'acker');
    $took = timed(function () use ($x): void {
        same(1, $x->push('acker', 'ack me', ['ack_timeout' => '600ms']), 'delivered');
    });
    same(false, $x->lastReply()['acked'] ?? null, 'a raw client never acknowledges');
    check($took >= 0.55 && $took < 1.5, sprintf('answered after the ack_timeout (%.3fs), past the 0.3s timeout', $took));
    same('ack me', $ws->readText(), 'received');
};

$tests['connect refused: ConnectionException naming the address'] = function (): void {
    $address = freePort();
    $x = new Client($address, 1.0);
    $e = null;
    $took = timed(function () use ($x, &$e): void {
        $e = throws(ConnectionException::class, fn () => $x->push('u', 1), 'refused');
    });
    same(ConnectionException::REFUSED, $e->getReason(), 'the reason');
    same($address, $e->getAddress(), 'the address');
    check(str_contains($e->getMessage(), $address) && str_contains($e->getMessage(), 'refused'), $e->getMessage());
    same(false, $e->maybeApplied(), 'nothing was sent');
    check($took < 1.0, 'at once');
    throws(InvalidArgumentException::class, fn () => new Client('localhost'), 'an address without a port');
};

$tests['a silent peer: ConnectionException (timeout) within the timeout, then reconnect'] = function (): void {
    [$pid, $address] = fake('silent');
    $x = new Client($address, 0.3);
    $e = null;
    $took = timed(function () use ($x, &$e): void {
        $e = throws(ConnectionException::class, fn () => $x->push('u', 1), 'no answer');
    });
    same(ConnectionException::TIMEOUT, $e->getReason(), 'the reason');
    check(str_contains($e->getMessage(), 'timeout') && str_contains($e->getMessage(), $address), $e->getMessage());
    same(true, $e->maybeApplied(), 'the request may have been applied');
    same(1, $e->getUnanswered(), 'one unanswered');
    check($took >= 0.29 && $took < 0.8, sprintf('gave up after the timeout (%.3fs)', $took));
    same(false, $x->isConnected(), 'closed');
    $took = timed(function () use ($x): void {
        throws(ConnectionException::class, fn () => $x->pushMany([['u', 1], ['u', 2]]), 'a new connection, silent too');
    });
    check($took < 0.8, 'bounded again');
    Procs::stop($pid);
};

$tests['a peer that closes mid-answer, or without answering: ConnectionException (lost)'] = function (): void {
    foreach (['half', 'close'] as $mode) {
        [$pid, $address] = fake($mode);
        $x = new Client($address, 2.0);
        $e = null;
        $took = timed(function () use ($x, &$e, $mode): void {
            $e = throws(ConnectionException::class, fn () => $x->stats(), $mode);
        });
        same(ConnectionException::LOST, $e->getReason(), "$mode: the reason");
        check(str_contains($e->getMessage(), 'connection lost') && str_contains($e->getMessage(), $address), $e->getMessage());
        check($took < 1.0, "$mode: at once, not at the timeout");
        Procs::stop($pid);
    }
};

$tests['a garbage answer: ProtocolException, connection closed'] = function (): void {
    [$pid, $address] = fake('garbage');
    $x = new Client($address, 2.0);
    $e = throws(ProtocolException::class, fn () => $x->push('u', 1), 'garbage');
    same('HTTP/1.1 400 Bad Request', $e->getAnswerLine(), 'the line');
    same(false, $x->isConnected(), 'closed');
    throws(ProtocolException::class, fn () => $x->pushLine(['uid' => 'u']), 'pushLine: garbage too');
    throws(ProtocolException::class, fn () => $x->pushLines([['uid' => 'u'], ['uid' => 'v']]), 'pipelined');
    Procs::stop($pid);
};

$tests['the hub killed while a request waits: ConnectionException, then refused'] = function () use ($bin, $tmp): void {
    $hub = new Hub($bin, "$tmp/killed.log", ['--allow-plain-uid', '--max-line-length', '1KiB']);
    $x = new Client($hub->text, 3.0);
    // An over-long line: the hub answers an error and closes; the next call
    // opens a new connection by itself.
    $e = throws(CommandException::class, fn () => $x->push('u', str_repeat('x', 2000)), 'an over-long line');
    check(str_starts_with($e->getError(), 'line longer than 1024 bytes'), $e->getError());
    same(0, $x->push('u', 'short'), 'the next call works, on a new connection');

    $ws = page($hub, $x, 'slow');
    // A raw client never acknowledges: the answer waits for ack_timeout.
    $killer = proc_open(['sh', '-c', "sleep 0.3; kill -9 {$hub->pid}"], [], $pipes);
    $e = null;
    $took = timed(function () use ($x, &$e): void {
        $e = throws(ConnectionException::class, fn () => $x->push('slow', 'x', ['ack_timeout' => '5s']), 'killed mid-request');
    });
    proc_close($killer);
    same(ConnectionException::LOST, $e->getReason(), 'lost');
    same(true, $e->maybeApplied(), 'may have been applied');
    check($took > 0.2 && $took < 2.0, sprintf('noticed at once (%.3fs)', $took));
    $hub->stop();
    $e = throws(ConnectionException::class, fn () => $x->push('slow', 'again'), 'the hub is gone');
    same(ConnectionException::REFUSED, $e->getReason(), 'refused');
};

$tests['loading: plain require, and a PSR-4 autoloader (as composer)'] = function (): void {
    $src = var_export(dirname(__DIR__) . '/src', true);
    $scripts = [
        'require' => "require $src . '/Client.php'; new Pushhub\\Client(); echo get_parent_class(Pushhub\\CommandException::class);",
        'psr-4' => "spl_autoload_register(function (\$c) { if (str_starts_with(\$c, 'Pushhub\\\\')) require $src . '/' . substr(\$c, 8) . '.php'; });"
            . " class_exists(Pushhub\\ProtocolException::class); new Pushhub\\Client(); echo get_parent_class(Pushhub\\CommandException::class);",
    ];
    foreach ($scripts as $how => $script) {
        $out = shell_exec(escapeshellarg(PHP_BINARY) . ' -d error_reporting=-1 -r ' . escapeshellarg($script) . ' 2>&1');
        same('Pushhub\\PushhubException', $out, "$how loads the classes");
    }
    $composer = json_decode((string) file_get_contents(dirname(__DIR__) . '/composer.json'), true);
    same('src/', $composer['autoload']['psr-4']['Pushhub\\'] ?? null, 'composer.json maps Pushhub\\ to src/');
};

// ----------------------------------------------------------------------

$failed = 0;
$i = 0;
foreach ($tests as $name => $test) {
    $i++;
    $t0 = microtime(true);
    try {
        $test();
        printf("ok   %2d %s (%.0f ms)\n", $i, $name, (microtime(true) - $t0) * 1e3);
    } catch (Throwable $e) {
        $failed++;
        printf("FAIL %2d %s (%.0f ms)\n      %s: %s\n      at %s:%d\n", $i, $name, (microtime(true) - $t0) * 1e3,
            get_class($e), $e->getMessage(), basename($e->getFile()), $e->getLine());
    }
}
$main->stop();
$tokenHub->stop();
printf("\n%d tests, %d passed, %d failed, %.2f s\n", count($tests), count($tests) - $failed, $failed, microtime(true) - $started);
exit($failed === 0 ? 0 : 1);
