using System.Text;

namespace MergeDsl.Core.Ops;

/// <summary>
/// Stable per-tensor seeds: a function of (seed, parameter name, stack position) only, so random
/// masks do not depend on execution order, threads or the .NET runtime (string.GetHashCode is
/// randomised per process and is not used).
/// </summary>
public static class Seeding
{
    /// <summary>FNV-1a 64 over the UTF-8 bytes of <paramref name="text"/>.</summary>
    public static ulong Fnv1a64(string text)
    {
        ulong h = 14695981039346656037UL;
        foreach (byte b in Encoding.UTF8.GetBytes(text))
        {
            h ^= b;
            h *= 1099511628211UL;
        }
        return h;
    }

    /// <summary>SplitMix64 finaliser: spreads nearby inputs over the whole range.</summary>
    public static ulong Mix(ulong z)
    {
        z += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>The generator seed for entry <paramref name="position"/> of parameter <paramref name="parameter"/>.</summary>
    public static ulong For(long seed, string parameter, int position) =>
        Mix(Mix((ulong)seed ^ Fnv1a64(parameter)) + (ulong)position) & 0x7FFF_FFFF_FFFF_FFFFUL;
}
