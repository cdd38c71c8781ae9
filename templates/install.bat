@echo off
rem Installs release {{release}} of {{bundle_id}} from this stick onto this computer,
rem written by offgrid pack-usb. Runs "offgrid install --from STICK ARGS..." with this
rem stick's offgrid for this computer; "install.bat --help" lists the options.
rem Generated file: it is listed in manifest.toml with its hash; do not edit it.
setlocal
set "HERE=%~dp0"
if "%HERE:~-1%"=="\" set "HERE=%HERE:~0,-1%"
set "CPU=%PROCESSOR_ARCHITECTURE%"
if defined PROCESSOR_ARCHITEW6432 set "CPU=%PROCESSOR_ARCHITEW6432%"
set "PLATFORM="
if /i "%CPU%"=="AMD64" set "PLATFORM=windows-x86_64"
if /i "%CPU%"=="ARM64" set "PLATFORM=windows-aarch64"
if not defined PLATFORM set "PLATFORM=windows-%CPU%"
set "BIN=%HERE%\bin\%PLATFORM%\offgrid.exe"
rem Windows on ARM runs x86_64 programs through emulation.
if not exist "%BIN%" if /i "%PLATFORM%"=="windows-aarch64" if exist "%HERE%\bin\windows-x86_64\offgrid.exe" set "BIN=%HERE%\bin\windows-x86_64\offgrid.exe"
if not exist "%BIN%" (
  echo offgrid: this stick has no offgrid for this computer ^(%PLATFORM%^) 1>&2
  echo offgrid: platforms on this stick: {{platforms}} 1>&2
  echo help: use a computer of one of those platforms, or ask HQ for a stick that carries %PLATFORM% 1>&2
  exit /b 2
)
"%BIN%" install --from "%HERE%" %*
exit /b %ERRORLEVEL%
