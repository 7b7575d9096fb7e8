namespace MergeDsl.Core;

/// <summary>
/// A setting outside what it accepts, named in the library's own terms (<c>learning rate</c>, <c>device</c>);
/// front ends map <see cref="Setting"/> to their option (the CLI's <c>--lr</c>, <c>--device</c>).
/// </summary>
public sealed class SettingException(string setting, string problem) : ArgumentException($"{setting}: {problem}")
{
    /// <summary>The setting's name, as the library calls it.</summary>
    public string Setting { get; } = setting;

    /// <summary>What is wrong with the value, without the setting's name.</summary>
    public string Problem { get; } = problem;
}
