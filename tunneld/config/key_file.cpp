#include "tunneld/config/key_file.hpp"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace tunneld {

std::string key_file_problem(const std::string& path, std::optional<uid_t> runs_as) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)
        return path + ": cannot read private key: " + std::strerror(errno);
    if (!S_ISREG(st.st_mode)) return path + ": private key is not a regular file";
    const uid_t me = ::geteuid();
    const uid_t user = runs_as.value_or(me);
    // root reads any file; any other user needs to own its key (mode 0600).
    if (user != 0 && st.st_uid != user) {
        const passwd* pw = ::getpwuid(user);
        std::string name = pw ? pw->pw_name : std::to_string(user);
        const passwd* owner = ::getpwuid(st.st_uid);
        std::string owned_by = owner ? owner->pw_name : "uid " + std::to_string(st.st_uid);
        return path + " is owned by " + owned_by + ", so " + name +
               " (the user tunneld runs as) cannot read it: run chown " + name + " " + path;
    }
    if (st.st_mode & 077) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
        return path + " is group/world accessible (mode " + mode + "): run chmod 600 " + path;
    }
    if (user == me && ::access(path.c_str(), R_OK) != 0)
        return path + ": cannot read private key: " + std::strerror(errno);
    return {};
}

}  // namespace tunneld
