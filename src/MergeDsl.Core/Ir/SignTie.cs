namespace MergeDsl.Core.Ir;

/// <summary>What TIES sign election elects where the vote (mass or count) is exactly 0.</summary>
public enum SignTie
{
    /// <summary>Sign 0: every entry of that element is dropped (MergeDsl's default, sign() of the vote).</summary>
    Zero,
    /// <summary>+1: positive entries survive (mergekit's <c>(sum &gt;= 0) * 2 - 1</c>).</summary>
    Positive,
}
