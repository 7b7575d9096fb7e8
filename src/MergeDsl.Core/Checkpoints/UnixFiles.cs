using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace MergeDsl.Core.Checkpoints;

/// <summary>
/// The few libc calls .NET does not expose: the file type (.NET reports a FIFO or /dev/zero as a plain
/// file), opening without blocking on a FIFO, and resolving every link of a path. statx is used rather
/// than stat because its struct has one layout on every Linux architecture.
/// </summary>
internal static unsafe class UnixFiles
{
    const int AT_FDCWD = -100;
    const int AT_SYMLINK_NOFOLLOW = 0x100;
    const int AT_EMPTY_PATH = 0x1000;
    const uint STATX_BASIC_STATS = 0x7ff;
    const int O_RDONLY = 0, O_NOCTTY = 0x100, O_NONBLOCK = 0x800, O_CLOEXEC = 0x80000;
    const int ENOENT = 2, ENOTDIR = 20, ELOOP = 40;

    [StructLayout(LayoutKind.Explicit, Size = 256)]
    struct Statx
    {
        [FieldOffset(28)] public ushort Mode;
        [FieldOffset(32)] public ulong Ino;
        [FieldOffset(40)] public ulong Size;
        [FieldOffset(112)] public long MtimeSec;
        [FieldOffset(120)] public uint MtimeNsec;
        [FieldOffset(136)] public uint DevMajor;
        [FieldOffset(140)] public uint DevMinor;
    }

    [DllImport("libc", EntryPoint = "statx", SetLastError = true)]
    static extern int StatxPath(int dirfd, [MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags, uint mask, out Statx buf);

    [DllImport("libc", EntryPoint = "open", SetLastError = true)]
    static extern int Open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

    [DllImport("libc", EntryPoint = "realpath", SetLastError = true)]
    static extern IntPtr RealPathNative([MarshalAs(UnmanagedType.LPUTF8Str)] string path, IntPtr resolved);

    [DllImport("libc", EntryPoint = "free")]
    static extern void Free(IntPtr p);

    static bool Native => OperatingSystem.IsLinux();

    static FileIdentity FromStatx(in Statx s)
    {
        var kind = (s.Mode & 0xF000) switch
        {
            0x8000 => FileKind.Regular,
            0x4000 => FileKind.Directory,
            0xA000 => FileKind.SymbolicLink,
            0x1000 => FileKind.Fifo,
            0x2000 => FileKind.CharacterDevice,
            0x6000 => FileKind.BlockDevice,
            0xC000 => FileKind.Socket,
            _ => FileKind.Other,
        };
        return new FileIdentity(kind, (long)s.Size, s.MtimeSec * 1_000_000_000 + s.MtimeNsec,
            ((long)s.DevMajor << 32) | s.DevMinor, (long)s.Ino);
    }

    /// <summary>stat (following links) or lstat; null when nothing is there (or a link dangles).</summary>
    public static FileIdentity? TryStat(string path, bool followLinks)
    {
        if (!Native) return ManagedStat(path, followLinks);
        if (StatxPath(AT_FDCWD, path, followLinks ? 0 : AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, out var s) == 0) return FromStatx(s);
        int errno = Marshal.GetLastPInvokeError();
        if (errno is ENOENT or ENOTDIR or ELOOP) return null;
        throw new IOException($"{path}: cannot stat ({Marshal.GetPInvokeErrorMessage(errno)})");
    }

    /// <summary>fstat of an open handle.</summary>
    public static FileIdentity Stat(SafeFileHandle handle, string pathForMessages)
    {
        if (!Native) return ManagedStat(pathForMessages, true) ?? throw new FileNotFoundException($"{pathForMessages}: no such file");
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            if (StatxPath((int)handle.DangerousGetHandle(), "", AT_EMPTY_PATH, STATX_BASIC_STATS, out var s) == 0) return FromStatx(s);
            int errno = Marshal.GetLastPInvokeError();
            throw new IOException($"{pathForMessages}: cannot stat ({Marshal.GetPInvokeErrorMessage(errno)})");
        }
        finally
        {
            if (added) handle.DangerousRelease();
        }
    }

    /// <summary>
    /// Opens for reading with O_NONBLOCK, so a FIFO swapped in after the type check cannot block the
    /// open (on a regular file the flag changes nothing).
    /// </summary>
    public static SafeFileHandle OpenReadNonBlocking(string path)
    {
        if (!Native) return File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        int fd = Open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            if (errno == ENOENT) throw new FileNotFoundException($"{path}: no such file", path);
            throw new IOException($"{path}: cannot open ({Marshal.GetPInvokeErrorMessage(errno)})");
        }
        return new SafeFileHandle(fd, ownsHandle: true);
    }

    /// <summary>The absolute path with every symbolic link, "." and ".." resolved; null when it does not exist.</summary>
    public static string? RealPath(string path)
    {
        if (!Native)
        {
            var full = Path.GetFullPath(path);
            return File.Exists(full) || Directory.Exists(full) ? full : null;
        }
        IntPtr p = RealPathNative(path, IntPtr.Zero);
        if (p == IntPtr.Zero) return null;
        try { return Marshal.PtrToStringUTF8(p); }
        finally { Free(p); }
    }

    static FileIdentity? ManagedStat(string path, bool followLinks)
    {
        FileSystemInfo info = Directory.Exists(path) ? new DirectoryInfo(path) : new FileInfo(path);
        if (!info.Exists) return null;
        if (!followLinks && info.LinkTarget is not null)
            return new FileIdentity(FileKind.SymbolicLink, 0, 0, 0, 0);
        if (info is DirectoryInfo) return new FileIdentity(FileKind.Directory, 0, info.LastWriteTimeUtc.Ticks * 100, 0, 0);
        return new FileIdentity(FileKind.Regular, ((FileInfo)info).Length, info.LastWriteTimeUtc.Ticks * 100, 0, 0);
    }
}
