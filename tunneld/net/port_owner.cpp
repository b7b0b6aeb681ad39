#include "tunneld/net/port_owner.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include "tunneld/c_ptr.hpp"

namespace tunneld {

namespace {

// Inodes of listening TCP sockets on `port`, from /proc/net/tcp and tcp6.
std::set<std::string> listening_inodes(std::uint16_t port) {
    std::set<std::string> out;
    for (const char* file : {"/proc/net/tcp", "/proc/net/tcp6"}) {
        std::ifstream in(file);
        std::string line;
        std::getline(in, line);  // header
        while (std::getline(in, line)) {
            std::istringstream f(line);
            std::string sl, local, remote, state, queues, timer, retr, uid, timeout, inode;
            f >> sl >> local >> remote >> state >> queues >> timer >> retr >> uid >> timeout >>
                inode;
            auto colon = local.rfind(':');
            if (state != "0A" || colon == std::string::npos) continue;  // 0A = LISTEN
            if (std::stoul(local.substr(colon + 1), nullptr, 16) == port) out.insert(inode);
        }
    }
    return out;
}

std::string read_all(const std::string& path) {
    std::ifstream in(path);
    std::stringstream b;
    b << in.rdbuf();
    return b.str();
}

// Pids holding one of `inodes` (socket inodes), at most `limit` of them.
std::vector<int> holders(const std::set<std::string>& inodes, std::size_t limit) {
    std::vector<int> out;
    if (inodes.empty()) return out;
    DirPtr proc(opendir("/proc"));
    if (!proc) return out;
    while (dirent* p = readdir(proc.get())) {
        if (!std::isdigit(static_cast<unsigned char>(p->d_name[0]))) continue;
        std::string fds = std::string("/proc/") + p->d_name + "/fd";
        DirPtr dir(opendir(fds.c_str()));
        if (!dir) continue;
        while (dirent* fd = readdir(dir.get())) {
            char target[64] = {};
            if (readlink((fds + "/" + fd->d_name).c_str(), target, sizeof target - 1) <= 0)
                continue;
            std::string t(target);
            if (t.rfind("socket:[", 0) != 0 || !inodes.count(t.substr(8, t.size() - 9))) continue;
            out.push_back(std::atoi(p->d_name));
            if (out.size() >= limit) return out;
            break;
        }
    }
    return out;
}

std::optional<PortOwner> owner_of(const std::set<std::string>& inodes) {
    if (inodes.empty()) return std::nullopt;
    auto pids = holders(inodes, 1);
    if (pids.empty()) return PortOwner{};
    PortOwner o;
    o.pid = pids.front();
    const std::string dir = "/proc/" + std::to_string(o.pid);
    o.command = read_all(dir + "/comm");
    if (!o.command.empty() && o.command.back() == '\n') o.command.pop_back();
    o.cmdline = read_all(dir + "/cmdline");
    for (auto& c : o.cmdline)
        if (c == '\0') c = ' ';
    while (!o.cmdline.empty() && o.cmdline.back() == ' ') o.cmdline.pop_back();
    return o;
}

}  // namespace

std::vector<int> listening_pids(std::uint16_t port) { return holders(listening_inodes(port), 64); }

std::optional<PortOwner> listen_address_taken(const Endpoint& ep) {
    sockaddr_storage ss{};
    socklen_t len = 0;
    int family = AF_INET;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
    if (inet_pton(AF_INET, ep.host.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(ep.port);
        len = sizeof *v4;
    } else if (inet_pton(AF_INET6, ep.host.c_str(), &v6->sin6_addr) == 1) {
        family = AF_INET6;
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(ep.port);
        len = sizeof *v6;
    } else {
        return std::nullopt;  // a name: the daemon resolves and reports it
    }
    UniqueFd s(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!s) return std::nullopt;
    int one = 1;
    ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (family == AF_INET6) ::setsockopt(s.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    int rc = ::bind(s.get(), reinterpret_cast<sockaddr*>(&ss), len);
    int err = errno;
    s.reset();
    if (rc == 0 || err != EADDRINUSE) return std::nullopt;
    auto owner = owner_of(listening_inodes(ep.port));
    return owner ? owner : PortOwner{};
}

}  // namespace tunneld
