// The two relay buffers of one connection, allocated once per connection.
// Pages are only touched as data flows, so an idle connection costs little RSS.
#pragma once
#include <memory>
#include <span>

namespace tunneld {

class RelayBuffers {
  public:
    static constexpr std::size_t kSize = 64 * 1024;  // per direction
    RelayBuffers() : data_(new char[2 * kSize]) {}
    std::span<char> out() { return {data_.get(), kSize}; }
    std::span<char> in() { return {data_.get() + kSize, kSize}; }

  private:
    std::unique_ptr<char[]> data_;
};

}  // namespace tunneld
