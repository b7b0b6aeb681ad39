#include "tunneld/health/pg_check.hpp"

#include "tunneld/health/conninfo.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <regex>
#include <sstream>

namespace tunneld {

namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;

namespace {

// Two statements, one round trip. The first: one row, role, positions,
// receiver state and what Patroni's bodies carry (version, timeline, system
// identifier, start time). The second: this node's walsenders. Works on a
// primary and a standby; needs pg_monitor (or superuser) to see
// pg_stat_wal_receiver.status and pg_stat_replication's columns.
constexpr const char* kStatusQuery =
    "SELECT pg_is_in_recovery(),"
    " CASE WHEN pg_is_in_recovery() THEN '' ELSE pg_current_wal_lsn()::text END,"
    " coalesce(pg_last_wal_receive_lsn()::text, ''),"
    " coalesce(pg_last_wal_replay_lsn()::text, ''),"
    " coalesce((SELECT status FROM pg_stat_wal_receiver), ''),"
    " CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END,"
    " CASE WHEN pg_is_in_recovery() AND pg_last_wal_receive_lsn() IS DISTINCT FROM "
    "pg_last_wal_replay_lsn()"
    "  THEN coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) ELSE 0 END,"
    " current_setting('server_version_num')::int,"
    " CASE WHEN pg_is_in_recovery() THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver),"
    "  (SELECT timeline_id FROM pg_control_checkpoint()))"
    "  ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,"
    " (SELECT system_identifier FROM pg_control_system())::text,"
    " pg_postmaster_start_time()::text,"
    " coalesce(pg_last_xact_replay_timestamp()::text, '');"
    "SELECT pid, coalesce(usename::text, ''), coalesce(application_name, ''),"
    " coalesce(host(client_addr), ''), coalesce(client_port, -1), coalesce(state, ''),"
    " coalesce(sync_state, ''), coalesce(sync_priority, 0), coalesce(sent_lsn::text, ''),"
    " coalesce(write_lsn::text, ''), coalesce(flush_lsn::text, ''), coalesce(replay_lsn::text, ''),"
    " coalesce(extract(epoch FROM write_lag), -1), coalesce(extract(epoch FROM flush_lag), -1),"
    " coalesce(extract(epoch FROM replay_lag), -1)"
    " FROM pg_stat_replication ORDER BY pid LIMIT 256";
constexpr int kStatusFields = 12;
constexpr int kWalSenderFields = 15;

std::int64_t to_int(const char* text) {
    try {
        return std::stoll(text);
    } catch (...) {
        return 0;
    }
}

double to_double(const char* text, double fallback) {
    try {
        return std::stod(text);
    } catch (...) {
        return fallback;
    }
}

WalSender walsender_row(PGresult* res, int row) {
    auto get = [&](int i) { return std::string(PQgetvalue(res, row, i)); };
    WalSender w;
    w.pid = to_int(PQgetvalue(res, row, 0));
    w.usename = get(1);
    w.application_name = get(2);
    w.client_addr = get(3);
    w.client_port = to_int(PQgetvalue(res, row, 4));
    w.state = get(5);
    w.sync_state = get(6);
    w.sync_priority = to_int(PQgetvalue(res, row, 7));
    w.sent_lsn = get(8);
    w.write_lsn = get(9);
    w.flush_lsn = get(10);
    w.replay_lsn = get(11);
    w.write_lag = to_double(PQgetvalue(res, row, 12), -1);
    w.flush_lag = to_double(PQgetvalue(res, row, 13), -1);
    w.replay_lag = to_double(PQgetvalue(res, row, 14), -1);
    return w;
}

enum class Want { read, write };

// Waits until libpq's socket is ready, or the deadline passes (false).
asio::awaitable<bool> wait_socket(asio::any_io_executor ex, int fd, Want want,
                                  asio::steady_timer& deadline) {
    asio::posix::stream_descriptor sd(ex, fd);
    struct Release {  // the fd belongs to libpq: never close it
        asio::posix::stream_descriptor& s;
        ~Release() { s.release(); }
    } release{sd};
    auto w = want == Want::read ? asio::posix::descriptor_base::wait_read
                                : asio::posix::descriptor_base::wait_write;
    auto r = co_await (sd.async_wait(w, asio::as_tuple(asio::use_awaitable)) ||
                       deadline.async_wait(asio::as_tuple(asio::use_awaitable)));
    co_return r.index() == 0;
}

}  // namespace

std::string server_refusal(const std::string& msg) {
    // libpq: 'connection to server on socket "..." failed: FATAL:  role "x" does not exist'
    std::string text = msg;
    if (auto at = text.find("FATAL:"); at != std::string::npos) {
        text = text.substr(at + 6);
        text.erase(0, text.find_first_not_of(' '));
    }
    static const std::regex role_missing(R"re(^role "([^"]+)" does not exist)re");
    static const std::regex peer_failed(R"re(^Peer authentication failed for user "([^"]+)")re");
    std::smatch m;
    if (std::regex_search(text, m, role_missing))
        return "health.postgres: role " + m[1].str() +
               " does not exist: on the primary run CREATE ROLE " + m[1].str() +
               " LOGIN IN ROLE pg_monitor (it replicates to standbys), or remove health.postgres";
    if (std::regex_search(text, m, peer_failed))
        return "health.postgres: peer authentication failed for role " + m[1].str() +
               ": connect as the OS user of the same name (tunneld), or allow it in pg_hba.conf";
    return "health.postgres: postgres refused the check: " + text;
}

PostgresCheck::PostgresCheck(asio::any_io_executor ex, std::string conninfo)
    : ex_(std::move(ex)), conninfo_(std::move(conninfo)) {}

asio::awaitable<PostgresState> PostgresCheck::run(Duration timeout) {
    PostgresState st;
    asio::steady_timer deadline(ex_);
    deadline.expires_after(timeout);
    auto fail = [&](std::string why) {
        conn_.reset();
        st.up = false;
        st.error = std::move(why);
        return st;
    };
    // Once libpq's socket connected, the server is there: a refusal after that is
    // postgres turning the check away (role, pg_hba, permissions), not a backend
    // that is down.
    auto refused = [&](const std::string& why) {
        fail(server_refusal(why));
        st.answered = true;
        return st;
    };
    auto timed_out = [&](const char* during) {
        return fail("timed out after " + format_duration(timeout) + " " + during);
    };

    if (!conn_ || PQstatus(conn_.get()) != CONNECTION_OK) {
        conn_.reset();
        const char* keys[] = {"dbname", "application_name", nullptr};
        const char* values[] = {conninfo_.c_str(), "tunneld health", nullptr};
        conn_.reset(PQconnectStartParams(keys, values, 1));
        if (!conn_) co_return fail("libpq: out of memory");
        if (PQstatus(conn_.get()) == CONNECTION_BAD)
            co_return fail(libpq_one_line(PQerrorMessage(conn_.get())));
        auto poll = PGRES_POLLING_WRITING;
        bool reached = false;
        while (poll != PGRES_POLLING_OK) {
            if (poll == PGRES_POLLING_FAILED) {
                auto why = libpq_one_line(PQerrorMessage(conn_.get()));
                co_return reached ? refused(why) : fail(why);
            }
            if (!co_await wait_socket(ex_, PQsocket(conn_.get()),
                                      poll == PGRES_POLLING_READING ? Want::read : Want::write,
                                      deadline))
                co_return timed_out("connecting");
            poll = PQconnectPoll(conn_.get());
            auto status = PQstatus(conn_.get());
            if (status != CONNECTION_STARTED && status != CONNECTION_BAD &&
                status != CONNECTION_NEEDED)
                reached = true;
        }
        PQsetnonblocking(conn_.get(), 1);
    }
    PGconn* c = conn_.get();
    if (!PQsendQuery(c, kStatusQuery)) co_return fail(libpq_one_line(PQerrorMessage(c)));
    for (int f; (f = PQflush(c)) != 0;) {
        if (f < 0) co_return fail(libpq_one_line(PQerrorMessage(c)));
        if (!co_await wait_socket(ex_, PQsocket(c), Want::write, deadline))
            co_return timed_out("sending the query");
    }
    bool got_row = false;
    std::string query_error;
    for (;;) {
        while (PQisBusy(c)) {
            if (!co_await wait_socket(ex_, PQsocket(c), Want::read, deadline))
                co_return timed_out("waiting for the answer");
            if (!PQconsumeInput(c)) co_return fail(libpq_one_line(PQerrorMessage(c)));
        }
        PgResultPtr res(PQgetResult(c));
        if (!res) break;
        if (PQresultStatus(res.get()) != PGRES_TUPLES_OK) {
            query_error = libpq_one_line(PQresultErrorMessage(res.get()));
            continue;
        }
        if (PQnfields(res.get()) == kWalSenderFields) {
            for (int r = 0; r < PQntuples(res.get()); ++r)
                st.walsenders.push_back(walsender_row(res.get(), r));
            continue;
        }
        if (PQntuples(res.get()) != 1 || PQnfields(res.get()) != kStatusFields) continue;
        auto get = [&](int i) { return std::string(PQgetvalue(res.get(), 0, i)); };
        st.in_recovery = get(0) == "t";
        st.current_lsn = get(1);
        st.receive_lsn = get(2);
        st.replay_lsn = get(3);
        st.receiver_status = get(4);
        st.replay_paused = get(5) == "t";
        st.replay_delay_seconds = to_double(PQgetvalue(res.get(), 0, 6), 0);
        st.server_version = to_int(PQgetvalue(res.get(), 0, 7));
        st.timeline = to_int(PQgetvalue(res.get(), 0, 8));
        st.system_identifier = get(9);
        st.postmaster_start_time = get(10);
        st.replay_timestamp = get(11);
        got_row = true;
    }
    if (!got_row)
        co_return refused(query_error.empty() ? "status query returned no row" : query_error);
    st.up = true;
    co_return st;
}

}  // namespace tunneld
