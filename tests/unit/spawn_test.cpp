// A task that throws ends alone: the event loop and its other tasks go on.
#include <gtest/gtest.h>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <future>
#include <stdexcept>

#include "tunneld/net/io_pool.hpp"
#include "tunneld/net/spawn.hpp"

namespace tunneld {
namespace {

TEST(Spawn, AnExceptionInOneCoroutineIsCountedAndTheLoopGoesOn) {
    IoPool pool(1);
    pool.start();
    auto before = internal_errors().load();
    std::promise<int> other_task;
    // A long-lived task on the same loop, like a relay.
    spawn(
        pool.at(0),
        [&]() -> boost::asio::awaitable<void> {
            boost::asio::steady_timer t(co_await boost::asio::this_coro::executor,
                                        std::chrono::milliseconds(50));
            co_await t.async_wait(boost::asio::use_awaitable);
            other_task.set_value(42);
        },
        "a relay");
    spawn(
        pool.at(0),
        []() -> boost::asio::awaitable<void> {
            throw std::out_of_range("stoi");  // what an unparsable netlink comment used to do
            co_return;
        },
        "the snapshot");
    auto f = other_task.get_future();
    ASSERT_EQ(f.wait_for(std::chrono::seconds(5)), std::future_status::ready);
    EXPECT_EQ(f.get(), 42);
    EXPECT_EQ(internal_errors().load(), before + 1);
    pool.stop_when_idle();
    pool.join();
}

TEST(Spawn, AThrowingPlainHandlerDoesNotEndTheWorkerThread) {
    IoPool pool(1);
    pool.start();
    auto before = internal_errors().load();
    boost::asio::post(pool.at(0), [] { throw std::runtime_error("boom"); });
    std::promise<void> after;
    boost::asio::post(pool.at(0), [&] { after.set_value(); });
    EXPECT_EQ(after.get_future().wait_for(std::chrono::seconds(5)), std::future_status::ready);
    EXPECT_EQ(internal_errors().load(), before + 1);
    pool.stop_when_idle();
    pool.join();
}

}  // namespace
}  // namespace tunneld
