namespace MergeDsl.Core.Moe.Sparse.Compression;

/// <summary>
/// The linear assignment problem on a dense square matrix: a permutation p maximising Σᵢ S[i, p(i)].
/// Exact solver: the shortest-augmenting-path Hungarian method with row and column potentials (the form
/// Jonker and Volgenant made standard), O(n³) time and O(n²) memory for the matrix, O(n) besides. Above
/// <see cref="ExactLimit"/> rows the exact solver's cube is too slow for a CPU (an intermediate size of 14336
/// is ~3·10¹² steps), so <see cref="Solve"/> falls back to a greedy matching, O(n² log n): rows in decreasing
/// order of their best entry each take their best free column. Which one ran is reported.
/// </summary>
public static class LinearAssignment
{
    /// <summary>The largest n solved exactly by default (n³ ≈ 6.9·10¹⁰ at 4096: minutes of one core at worst).</summary>
    public const int ExactLimit = 4096;

    /// <summary>
    /// The assignment of rows to columns maximising the total similarity: <c>Columns[i]</c> is row i's column.
    /// Exact when n ≤ <paramref name="exactLimit"/>, greedy above.
    /// </summary>
    /// <param name="similarity">Square n × n matrix of finite numbers (larger = better match).</param>
    /// <param name="exactLimit">Largest n solved exactly.</param>
    /// <exception cref="ArgumentException">A non-square matrix or a non-finite entry.</exception>
    public static Assignment Solve(double[,] similarity, int exactLimit = ExactLimit)
    {
        int n = similarity.GetLength(0);
        if (similarity.GetLength(1) != n) throw new ArgumentException($"assignment needs a square matrix, got {n} × {similarity.GetLength(1)}");
        foreach (var v in similarity)
            if (!double.IsFinite(v)) throw new ArgumentException($"assignment needs finite similarities, got {v}");
        return n <= exactLimit ? new Assignment(Hungarian(similarity), Exact: true) : new Assignment(Greedy(similarity), Exact: false);
    }

    /// <summary>Σᵢ S[i, columns[i]].</summary>
    public static double Total(double[,] similarity, IReadOnlyList<int> columns)
    {
        double s = 0;
        for (int i = 0; i < columns.Count; i++) s += similarity[i, columns[i]];
        return s;
    }

    // Minimises the cost −S. Rows are added one at a time; each addition grows a shortest-path tree over the
    // columns with reduced costs cost[i, j] − u[i] − v[j] ≥ 0 (Dijkstra without a heap, O(n²) per row) and
    // augments along it. Arrays are 1-based with column 0 as the virtual start, as in the textbook form.
    static int[] Hungarian(double[,] s)
    {
        int n = s.GetLength(0);
        var u = new double[n + 1];
        var v = new double[n + 1];
        var rowOfColumn = new int[n + 1];
        var way = new int[n + 1];
        var minTo = new double[n + 1];
        var used = new bool[n + 1];
        for (int i = 1; i <= n; i++)
        {
            rowOfColumn[0] = i;
            int j0 = 0;
            Array.Fill(minTo, double.PositiveInfinity);
            Array.Fill(used, false);
            do
            {
                used[j0] = true;
                int i0 = rowOfColumn[j0], j1 = 0;
                double delta = double.PositiveInfinity;
                for (int j = 1; j <= n; j++)
                {
                    if (used[j]) continue;
                    double cur = -s[i0 - 1, j - 1] - u[i0] - v[j];
                    if (cur < minTo[j]) { minTo[j] = cur; way[j] = j0; }
                    if (minTo[j] < delta) { delta = minTo[j]; j1 = j; }
                }
                for (int j = 0; j <= n; j++)
                {
                    if (used[j]) { u[rowOfColumn[j]] += delta; v[j] -= delta; }
                    else minTo[j] -= delta;
                }
                j0 = j1;
            } while (rowOfColumn[j0] != 0);
            do
            {
                int j1 = way[j0];
                rowOfColumn[j0] = rowOfColumn[j1];
                j0 = j1;
            } while (j0 != 0);
        }
        var columns = new int[n];
        for (int j = 1; j <= n; j++) columns[rowOfColumn[j] - 1] = j - 1;
        return columns;
    }

    static int[] Greedy(double[,] s)
    {
        int n = s.GetLength(0);
        var best = new double[n];
        for (int i = 0; i < n; i++)
        {
            best[i] = double.NegativeInfinity;
            for (int j = 0; j < n; j++) best[i] = Math.Max(best[i], s[i, j]);
        }
        var order = Enumerable.Range(0, n).OrderByDescending(i => best[i]).ThenBy(i => i).ToArray();
        var taken = new bool[n];
        var columns = new int[n];
        foreach (var i in order)
        {
            int pick = -1;
            for (int j = 0; j < n; j++)
                if (!taken[j] && (pick < 0 || s[i, j] > s[i, pick])) pick = j;
            taken[pick] = true;
            columns[i] = pick;
        }
        return columns;
    }
}

/// <summary>A solved assignment.</summary>
/// <param name="Columns">Row i is matched with column <c>Columns[i]</c> (a permutation of 0..n−1).</param>
/// <param name="Exact">True when the optimum was computed (Hungarian), false for the greedy fallback.</param>
public sealed record Assignment(IReadOnlyList<int> Columns, bool Exact);
