// How log lines look, on a terminal and in the journal. Every message passes
// through printable() on its way out, whatever it carries (a peer's pong, an
// HTTP target, a certificate field, a file's contents): a newline in it cannot
// start a second journal entry and "<0>" cannot set a priority.
#pragma once
#include <spdlog/formatter.h>

#include <memory>

namespace tunneld {

// The formatter for every log line. `journal` (stderr is the journal:
// $JOURNAL_STREAM): "<4>message" with the priority prefix journald reads and no
// time stamp (the journal has its own); otherwise
// "2026-12-05T11:00:00.000 warning message". Either way one line per message:
// control characters and non-ASCII bytes in the message are written as "\xNN"
// and a message is cut at 16 KiB.
std::unique_ptr<spdlog::formatter> make_log_formatter(bool journal);

}  // namespace tunneld
