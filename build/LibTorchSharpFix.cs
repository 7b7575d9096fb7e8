// One source of truth for the Debian 12 fix of libLibTorchSharp.so (see docs/torchsharp-on-debian.md).
// Compiled twice: into MergeDsl.Core (MERGEDSL_CORE defined, patcher only) so programs and tests can
// check and apply it, and by MSBuild's RoslynCodeTaskFactory (build/TorchSharpFix.targets) as a build task.
#nullable enable
using System;
using System.Collections.Generic;
using System.IO;
using System.Text;

namespace MergeDsl.Build
{
    /// <summary>What <see cref="ElfVerneedPatcher.Apply"/> did to a file.</summary>
    public enum PatchOutcome
    {
        /// <summary>The version requirement was strong and is now weak.</summary>
        Patched,
        /// <summary>The requirement was already weak: nothing written.</summary>
        AlreadyWeak,
        /// <summary>The file does not ask for the version at all.</summary>
        NotRequired,
    }

    /// <summary>
    /// Marks one symbol-version requirement of an ELF64 shared library as weak (VER_FLG_WEAK), so the
    /// dynamic loader accepts a libstdc++ that lacks that version. TorchSharp 0.107's native glue asks
    /// for GLIBCXX_3.4.32 only to record the GCC 13 header it was built with; no relocation needs it.
    /// </summary>
    public static class ElfVerneedPatcher
    {
        /// <summary>The version Debian 12's libstdc++ lacks.</summary>
        public const string RequiredVersion = "GLIBCXX_3.4.32";

        const uint ShtGnuVerneed = 0x6ffffffe;
        const ushort VerFlagWeak = 0x2;

        /// <summary>The System V ELF hash, as stored in <c>vna_hash</c>.</summary>
        public static uint ElfHash(string name)
        {
            uint h = 0;
            foreach (byte c in Encoding.ASCII.GetBytes(name))
            {
                h = (h << 4) + c;
                uint g = h & 0xf0000000;
                if (g != 0) h ^= g >> 24;
                h &= ~g;
            }
            return h;
        }

        /// <summary>
        /// True when this machine's libstdc++ is missing <see cref="RequiredVersion"/> (Debian 12), false
        /// when it has it (Ubuntu 24.04, Debian 13) or when there is no libstdc++ to look at (not Linux).
        /// </summary>
        public static bool SystemLibStdCxxLacksRequiredVersion()
        {
            string? lib = FindSystemLibStdCxx();
            if (lib == null) return false;
            return IndexOf(File.ReadAllBytes(lib), Encoding.ASCII.GetBytes(RequiredVersion + "\0")) < 0;
        }

        /// <summary>The libstdc++.so.6 the loader would pick from the standard directories, if any.</summary>
        public static string? FindSystemLibStdCxx()
        {
            if (!System.Runtime.InteropServices.RuntimeInformation.IsOSPlatform(System.Runtime.InteropServices.OSPlatform.Linux)) return null;
            string[] dirs =
            {
                "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
                "/lib/aarch64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib", "/lib",
            };
            foreach (string dir in dirs)
            {
                string candidate = Path.Combine(dir, "libstdc++.so.6");
                if (File.Exists(candidate)) return candidate;
            }
            return null;
        }

        /// <summary>Whether the file's requirement on <paramref name="version"/> is present and weak.</summary>
        public static PatchOutcome Inspect(string path, string version = RequiredVersion)
        {
            byte[] elf = File.ReadAllBytes(path);
            int at = FindVernauxFlags(elf, ElfHash(version), path);
            if (at < 0) return PatchOutcome.NotRequired;
            return (BitConverter.ToUInt16(elf, at) & VerFlagWeak) != 0 ? PatchOutcome.AlreadyWeak : PatchOutcome.Patched;
        }

        /// <summary>
        /// Makes the requirement on <paramref name="version"/> weak, writing the two bytes in place.
        /// Idempotent: a second call returns <see cref="PatchOutcome.AlreadyWeak"/> and writes nothing.
        /// </summary>
        public static PatchOutcome Apply(string path, string version = RequiredVersion)
        {
            byte[] elf = File.ReadAllBytes(path);
            int at = FindVernauxFlags(elf, ElfHash(version), path);
            if (at < 0) return PatchOutcome.NotRequired;
            ushort flags = BitConverter.ToUInt16(elf, at);
            if ((flags & VerFlagWeak) != 0) return PatchOutcome.AlreadyWeak;
            byte[] patched = BitConverter.GetBytes((ushort)(flags | VerFlagWeak));
            using (var stream = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.Read))
            {
                stream.Seek(at, SeekOrigin.Begin);
                stream.Write(patched, 0, 2);
            }
            return PatchOutcome.Patched;
        }

        // Offset of the vna_flags field of the Vernaux whose hash matches, or -1.
        static int FindVernauxFlags(byte[] elf, uint hash, string path)
        {
            if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
                throw new InvalidDataException($"{path}: not an ELF file");
            if (elf[4] != 2 || elf[5] != 1)
                throw new InvalidDataException($"{path}: only 64-bit little-endian ELF is supported");
            long shoff = BitConverter.ToInt64(elf, 0x28);
            int shentsize = BitConverter.ToUInt16(elf, 0x3A);
            int shnum = BitConverter.ToUInt16(elf, 0x3C);
            for (int i = 0; i < shnum; i++)
            {
                long sh = shoff + (long)i * shentsize;
                if (sh + 64 > elf.Length) throw new InvalidDataException($"{path}: section header {i} lies outside the file");
                if (BitConverter.ToUInt32(elf, (int)sh + 4) != ShtGnuVerneed) continue;
                long offset = BitConverter.ToInt64(elf, (int)sh + 0x18);
                int count = (int)BitConverter.ToUInt32(elf, (int)sh + 0x2C);
                long need = offset;
                for (int n = 0; n < count; n++)
                {
                    int auxCount = BitConverter.ToUInt16(elf, (int)need + 2);
                    long aux = need + BitConverter.ToUInt32(elf, (int)need + 8);
                    for (int a = 0; a < auxCount; a++)
                    {
                        if (BitConverter.ToUInt32(elf, (int)aux) == hash) return (int)aux + 4;
                        aux += BitConverter.ToUInt32(elf, (int)aux + 12);
                    }
                    uint next = BitConverter.ToUInt32(elf, (int)need + 12);
                    if (next == 0) break;
                    need += next;
                }
            }
            return -1;
        }

        static int IndexOf(byte[] haystack, byte[] needle)
        {
            // Plain loop: the build task compiles against netstandard, which lacks span search.
            for (int i = 0; i + needle.Length <= haystack.Length; i++)
            {
                int j = 0;
                while (j < needle.Length && haystack[i + j] == needle[j]) j++;
                if (j == needle.Length) return i;
            }
            return -1;
        }
    }

#if !MERGEDSL_CORE
    /// <summary>MSBuild task: applies the fix to each existing file, only where the system needs it.</summary>
    public class PatchLibTorchSharp : Microsoft.Build.Utilities.Task
    {
        [Microsoft.Build.Framework.Required]
        public Microsoft.Build.Framework.ITaskItem[] Files { get; set; } = Array.Empty<Microsoft.Build.Framework.ITaskItem>();

        public override bool Execute()
        {
            if (!ElfVerneedPatcher.SystemLibStdCxxLacksRequiredVersion()) return true;
            var seen = new HashSet<string>();
            foreach (var item in Files)
            {
                string path = Path.GetFullPath(item.ItemSpec);
                if (!File.Exists(path) || !seen.Add(path)) continue;
                try
                {
                    var outcome = ElfVerneedPatcher.Apply(path);
                    if (outcome == PatchOutcome.Patched)
                        Log.LogMessage(Microsoft.Build.Framework.MessageImportance.High,
                            $"MergeDsl: marked {ElfVerneedPatcher.RequiredVersion} weak in {path} (Debian 12 libstdc++ fix)");
                }
                catch (Exception e)
                {
                    Log.LogWarning($"MergeDsl: could not patch {path}: {e.Message}");
                }
            }
            return true;
        }
    }
#endif
}
