<?php

// A stand-in for the text port that misbehaves, for the failure tests.
// Prints its address on stdout, then serves one connection at a time:
//   silent   reads and never answers
//   half     answers the first line with half a reply, then closes
//   close    reads the first line, then closes without answering
//   garbage  answers every line with a line the text port never sends
// Run by tests/run.php: php FakeServer.php MODE

declare(strict_types=1);

$mode = $argv[1] ?? 'silent';
$server = stream_socket_server('tcp://127.0.0.1:0', $errno, $errstr);
if ($server === false) {
    fwrite(STDERR, "fake server: $errstr\n");
    exit(1);
}
echo stream_socket_get_name($server, false), "\n";
fflush(STDOUT);
$held = [];
while (true) {
    $conn = @stream_socket_accept($server, 60);
    if ($conn === false) {
        exit(0);
    }
    $line = fgets($conn);
    if ($line === false) {
        continue;
    }
    switch ($mode) {
        case 'silent':
            $held[] = $conn;
            break;
        case 'half':
            fwrite($conn, '{"ok":true,"deliv');
            fclose($conn);
            break;
        case 'close':
            fclose($conn);
            break;
        case 'garbage':
            do {
                fwrite($conn, "HTTP/1.1 400 Bad Request\n");
            } while (($line = fgets($conn)) !== false);
            fclose($conn);
            break;
    }
}
