// Relay buffers that cost nothing while a connection idles. A direction takes a
// 256 KiB block from its thread's pool when data arrives and gives it back as
// soon as a read comes back short (its source is drained): the wait for the
// next data holds no buffer. Blocks kept in a pool would stay resident anyway
// (the allocator keeps freed pages), so the pool only bounds how many a thread
// keeps for reuse; a burst beyond that allocates and frees. OpenSSL's own
// buffers behave alike (SSL_MODE_RELEASE_BUFFERS, SSL_free_buffers before a wait).
#pragma once
#include <cstddef>
#include <memory>
#include <span>
#include <vector>

namespace tunneld {

class RelayBuffer {
  public:
    static constexpr std::size_t kSize = 256 * 1024;
    static constexpr std::size_t kPoolKeep = 8;  // blocks kept per thread (2 MiB)

    RelayBuffer() = default;
    RelayBuffer(const RelayBuffer&) = delete;
    RelayBuffer& operator=(const RelayBuffer&) = delete;
    ~RelayBuffer() { release(); }

    // The block to read into, taken from the pool if not held yet.
    std::span<char> get() {
        if (!block_) {
            auto& pool = free_blocks();
            if (pool.empty()) {
                block_.reset(new char[kSize]);
            } else {
                block_ = std::move(pool.back());
                pool.pop_back();
            }
        }
        return {block_.get(), kSize};
    }
    // `n` bytes read into get() have been passed on. A short read drained the
    // source: the block goes back.
    void used(std::size_t n) {
        if (n < kSize) release();
    }
    void release() {
        if (!block_) return;
        auto& pool = free_blocks();
        if (pool.size() < kPoolKeep) pool.push_back(std::move(block_));
        block_.reset();
    }
    bool held() const { return block_ != nullptr; }

  private:
    static std::vector<std::unique_ptr<char[]>>& free_blocks() {
        thread_local std::vector<std::unique_ptr<char[]>> pool;
        return pool;
    }
    std::unique_ptr<char[]> block_;
};

// The two directions of one connection.
struct RelayBuffers {
    RelayBuffer out;  // local -> far end
    RelayBuffer in;   // far end -> local
};

}  // namespace tunneld
