// libexpat (Debian libexpat1-dev): STS's XML answers. FoundationXML would bring libxml2 and, with it, the
// system ICU libraries into credd's memory.
#include <expat.h>
