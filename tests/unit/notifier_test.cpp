// READY=1 waits for the first results by notification: ready() is asked again
// when something pokes the notifier, and max_wait still ends the wait.
#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <thread>

#include "tunneld/app/notifier.hpp"
#include "tunneld/health/backend_state.hpp"
#include "tunneld/net/io_pool.hpp"

namespace tunneld {
namespace {

using namespace std::chrono_literals;

struct Announce {
    boost::asio::io_context io{1};
    IoPool pool{1};
    Notifier notifier{io, pool, [] { return std::string("healthy"); }};
    std::atomic<bool> announced{false};
    std::string line;

    // Runs announce_ready on io until it logs READY (then stops the notifier)
    // or `guard` passes; returns whether READY came.
    bool run(std::function<bool()> ready, Duration max_wait, std::chrono::seconds guard = 20s) {
        boost::asio::co_spawn(io,
                              notifier.announce_ready(std::move(ready), max_wait,
                                                      [this](const std::string& l) {
                                                          line = l;
                                                          announced = true;
                                                          notifier.stopping();
                                                      }),
                              boost::asio::detached);
        io.run_for(guard);
        return announced;
    }
};

TEST(Notifier, ReadyIsAskedAgainWhenPokedFromAnotherThread) {
    Announce a;
    Latest<BackendState> backend;
    backend.on_set([&] { a.notifier.poke(); });  // as the daemon wires rt.backend
    std::thread checker([&] {
        std::this_thread::sleep_for(100ms);
        BackendState s;
        s.checked = true;
        backend.set(s);
    });
    // max_wait of an hour: only the poke can end this within the guard.
    EXPECT_TRUE(a.run([&] { return backend.get().checked; }, std::chrono::hours(1)));
    checker.join();
    EXPECT_EQ(a.line, "healthy");
}

TEST(Notifier, MaxWaitAnnouncesWhatIsKnownWhenNothingArrives) {
    Announce a;
    EXPECT_TRUE(a.run([] { return false; }, 200ms));
}

TEST(Notifier, AlreadyReadyAnnouncesWithoutWaiting) {
    Announce a;
    EXPECT_TRUE(a.run([] { return true; }, std::chrono::hours(1), 5s));
}

TEST(Notifier, StoppingBeforeReadyAnnouncesNothing) {
    Announce a;
    boost::asio::post(a.io, [&] { a.notifier.stopping(); });
    EXPECT_FALSE(a.run([] { return false; }, std::chrono::hours(1), 5s));
}

}  // namespace
}  // namespace tunneld
