/*
 * A test-only stand-in for Windows' bcryptprimitives.dll, for running
 * certpin.exe under Wine (tests/windows.rs, built by scripts/windows-cli).
 * Never shipped: the release binary runs on Windows 10+, which has the real
 * one.
 *
 * Why: Rust's std (1.78+, rust-lang/rust#121337) imports ProcessPrng from
 * bcryptprimitives.dll, and Debian 12's Wine 8.0 has no such DLL, so the exe
 * does not even load ("import_dll Library bcryptprimitives.dll ... not
 * found", status c0000135). Wine added bcryptprimitives.dll with ProcessPrng
 * in its 8.13 development release, so Wine 9.0 and later have it: once the
 * test machines run one of those, delete this file (scripts/windows-cli
 * already leaves it out when Wine ships the DLL).
 *
 * ProcessPrng never fails on Windows; BCryptGenRandom with the system's
 * preferred RNG is what Wine 8.0 has, and what ProcessPrng's callers
 * (std's HashMap keys, the rand crate's OsRng) need from it.
 */
#include <windows.h>
#include <bcrypt.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T size)
{
    /* BCryptGenRandom takes a ULONG length; SIZE_T is wider on x86_64. */
    while (size) {
        ULONG len = size > 0xFFFFFFFFu ? 0xFFFFFFFFu : (ULONG)size;
        if (!BCRYPT_SUCCESS(BCryptGenRandom(NULL, data, len, BCRYPT_USE_SYSTEM_PREFERRED_RNG)))
            return FALSE;
        data += len;
        size -= len;
    }
    return TRUE;
}
