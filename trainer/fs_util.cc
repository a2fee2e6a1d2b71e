#include "trainer/fs_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "core/file_util.h"

namespace indexcache {

namespace {
std::string Errno() { return std::strerror(errno); }
}  // namespace

Status MakeDirectories(const std::string& path) {
  if (path.empty() || IsDirectory(path)) return Status::Ok();
  const std::string parent = DirName(path);
  if (parent != path) RETURN_IF_ERROR(MakeDirectories(parent));
  // EEXIST: created meanwhile by someone else (another rank); fine if it is a directory.
  if (::mkdir(path.c_str(), 0755) != 0 && !(errno == EEXIST && IsDirectory(path))) {
    return IoError(path + ": cannot create directory: " + Errno());
  }
  return Status::Ok();
}

StatusOr<std::vector<std::string>> ListDirectory(const std::string& path) {
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) {
    if (errno == ENOENT) return NotFound(path + ": no such directory");
    return IoError(path + ": cannot list directory: " + Errno());
  }
  std::vector<std::string> names;
  while (const dirent* entry = ::readdir(dir)) {
    const std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

Status RemoveTree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return IoError(path + ": " + Errno());
  }
  if (S_ISDIR(st.st_mode)) {
    ASSIGN_OR_RETURN(const std::vector<std::string> names, ListDirectory(path));
    for (const std::string& name : names) RETURN_IF_ERROR(RemoveTree(JoinPath(path, name)));
    if (::rmdir(path.c_str()) != 0 && errno != ENOENT) {
      return IoError(path + ": cannot remove directory: " + Errno());
    }
    return Status::Ok();
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return IoError(path + ": cannot remove: " + Errno());
  return Status::Ok();
}

Status HardLink(const std::string& from, const std::string& to, std::string* reason) {
  if (::linkat(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), AT_SYMLINK_FOLLOW) != 0) {
    const std::string err = Errno();
    if (reason) *reason = err;
    return IoError(to + ": cannot hard-link to " + from + ": " + err);
  }
  return Status::Ok();
}

Status CopyFileStreaming(const std::string& from, const std::string& to) {
  const int in = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return IoError(from + ": " + Errno());
  const int out = ::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (out < 0) {
    const std::string err = Errno();
    ::close(in);
    return IoError(to + ": " + err);
  }
  auto fail = [&](const std::string& what) {
    ::close(in);
    ::close(out);
    ::unlink(to.c_str());
    return IoError(what);
  };
  // copy_file_range first (in-kernel, no user-space buffer); EXDEV (older kernels across
  // filesystems), ENOSYS, EINVAL or EOPNOTSUPP on the first call switch to plain reads and writes.
  bool use_range = true;
  bool copied_any = false;
  for (;;) {
    if (use_range) {
      const ssize_t n = ::copy_file_range(in, nullptr, out, nullptr, size_t{1} << 30, 0);
      if (n > 0) {
        copied_any = true;
        continue;
      }
      if (n == 0) break;
      if (errno == EINTR) continue;
      if (!copied_any && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP)) {
        use_range = false;
        continue;
      }
      return fail(to + ": copy from " + from + " failed: " + Errno());
    }
    std::vector<char> buf(size_t{8} << 20);
    for (;;) {
      const ssize_t n = ::read(in, buf.data(), buf.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return fail(from + ": read failed: " + Errno());
      }
      if (n == 0) break;
      for (ssize_t done = 0; done < n;) {
        const ssize_t w = ::write(out, buf.data() + done, static_cast<size_t>(n - done));
        if (w < 0) {
          if (errno == EINTR) continue;
          return fail(to + ": write failed: " + Errno());
        }
        done += w;
      }
    }
    break;
  }
  if (::fsync(out) != 0) return fail(to + ": fsync failed: " + Errno());
  ::close(in);
  if (::close(out) != 0) {
    const std::string err = Errno();
    ::unlink(to.c_str());
    return IoError(to + ": close failed: " + err);
  }
  return Status::Ok();
}

std::string HostName() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

}  // namespace indexcache
