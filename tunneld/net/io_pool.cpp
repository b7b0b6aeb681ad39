#include "tunneld/net/io_pool.hpp"

#include <pthread.h>

#include <algorithm>

#include "tunneld/net/spawn.hpp"

namespace tunneld {

IoPool::IoPool(unsigned threads, std::string name) : name_(std::move(name)) {
    for (unsigned i = 0; i < threads; ++i) {
        contexts_.emplace_back(1);  // one thread per context: no locking inside Asio
        guards_.push_back(boost::asio::make_work_guard(contexts_.back()));
    }
}

boost::asio::io_context& IoPool::next() { return contexts_[next_++ % contexts_.size()]; }

void IoPool::start() {
    std::size_t i = 0;
    for (auto& io : contexts_)
        threads_.emplace_back(
            [&io, name = ("td-" + name_ + "-" + std::to_string(i++)).substr(0, 15)] {
                pthread_setname_np(pthread_self(), name.c_str());
                // A handler that throws ends only itself: log, count, run on.
                for (;;) {
                    try {
                        io.run();
                        return;
                    } catch (...) {
                        report_internal_error("an event-loop handler", std::current_exception());
                    }
                }
            });
}

void IoPool::stop_when_idle() {
    for (auto& g : guards_) g.reset();
}

void IoPool::join() {
    for (auto& t : threads_)
        if (t.joinable()) t.join();
}

unsigned IoPool::threads_for(unsigned configured) {
    if (configured) return configured;
    return std::clamp(std::thread::hardware_concurrency(), 1u, 8u);
}

}  // namespace tunneld
